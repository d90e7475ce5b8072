"""The MLflow model registry: register a model directory, gate its promotion, report status.

Registry (:func:`register_model_dir`): a model directory becomes one version of
``register.model_name``, logged as an MLflow "models from code" pyfunc
(:mod:`distilflow.register.pyfunc`) whose artifact is the directory itself (safetensors,
processor, generation config, side files, ``experts/`` when present): nothing is pickled, and
generic MLflow consumers (``mlflow.pyfunc.load_model``, ``mlflow models serve``) work too. Each
version gets the aliases ``challenger`` and ``staging``; the promotion gate
(:mod:`distilflow.register.gate`) moves ``champion`` and ``production`` to it or not (promoted;
rejected or insufficient evidence: registered, not champion), and the decision is recorded as
version tags, as ``decision.json`` on the run and returned. The per-clip errors behind the
version's dev WER go with it as ``clip_errors.json`` on the run
(:mod:`distilflow.register.clip_errors`), for the next challenger's paired comparison.

MLflow is imported only inside ``distilflow.register``: here, :mod:`~distilflow.register.tracking`
(tracking URIs, the training stages' runs), :mod:`~distilflow.register.pyfunc` and
:mod:`~distilflow.register.download` (consumers: ``load_registered``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.config import RegisterConfig, TrackingConfig
from distilflow.models.dynamic import (
    audio_context_of_dir,
    context_margin_of_dir,
    describe_audio_context,
)
from distilflow.register.clip_errors import (
    ARTIFACT,
    ClipErrors,
    Rescored,
    as_rescored,
    from_record,
    paired_clips,
    to_record,
)
from distilflow.register.gate import Decision, clean_scores, decide, with_rescored
from distilflow.register.model_card import CardInfo, render_model_card
from distilflow.register.pyfunc import log_pyfunc
from distilflow.register.tracking import use_tracking
from distilflow.register.wer_basis import unmatched_languages

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHALLENGER_ALIASES = ("challenger", "staging")  # every new version
CHAMPION_ALIASES = ("champion", "production")  # promoted versions
MAX_TAG = 5000  # characters kept of a long tag value


@dataclass(frozen=True)
class Candidate:
    """A model directory to register, with its scores and where it came from."""

    model_dir: Path  # transformers Whisper dir (+ side files, optional experts/)
    wer: Mapping[str, Any]  # per-language dev WER (NaN/missing allowed)
    lineage: Mapping[str, Any]  # git_commit, params_hash, input_hash, teacher_id, ...
    kind: str = "student"
    data: Mapping[str, Any] = field(default_factory=dict)  # for the model card
    # per language, what ``wer`` was measured on (distilflow/register/wer_basis.py); {} = unknown
    wer_basis: Mapping[str, str] = field(default_factory=dict)
    # per language, clip key -> (errors, words) behind ``wer`` (distilflow/register/clip_errors.py)
    clip_errors: Mapping[str, Mapping[str, tuple[int, int]]] = field(default_factory=dict)
    # the evaluation's pages (report.md, explorer.html, ...): logged with the run, evaluation/
    evaluation_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Champion:
    """The version holding the ``champion`` alias, with its recorded WER and their basis."""

    version: str
    wer: dict[str, Any]
    basis: dict[str, str]  # {} for versions registered before bases were recorded
    clip_errors: ClipErrors = field(default_factory=dict)  # {}: none recorded


# Scores a registered model (its ``models:/name/version`` URI) on the challenger's clips of the
# given languages, decoded as the challenger was: per-language WER, with the per-clip errors when
# it can (``Rescored``). Given by the caller, which knows the evaluation; this module only calls it.
Rescore = Callable[[str, list[str]], Mapping[str, float] | Rescored]


@dataclass(frozen=True)
class Registration:
    """What a registration did: the version, the aliases it now holds, the decision."""

    model_name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    aliases: list[str]
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "aliases": self.aliases,
            "decision": self.decision.to_dict(),
        }


def registry_client(cfg: TrackingConfig) -> MlflowClient:
    """A client on the configured tracking and registry URIs (set globally for this process)."""
    import mlflow

    use_tracking(cfg, registry=True)
    return mlflow.MlflowClient()


def current_champion(client: MlflowClient, name: str) -> Champion | None:
    """The version with the ``champion`` alias, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION_ALIASES[0])
    except MlflowException:  # no such model, or no such alias
        return None
    return Champion(
        str(version.version),
        json.loads(version.tags.get("wer", "{}")),
        json.loads(version.tags.get("wer_basis", "{}")),
        recorded_clip_errors(client, version.run_id),
    )


def recorded_clip_errors(client: MlflowClient, run_id: str | None) -> ClipErrors:
    """The per-clip errors a version recorded on its registration run ({} when it has none:
    a version registered before they were recorded, or without an evaluation behind it)."""
    import tempfile

    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
    except MlflowException:  # the run is gone
        return {}
    if ARTIFACT not in names:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, ARTIFACT, tmp)
        return from_record(json.loads(Path(path).read_text(encoding="utf-8")))


def judge(
    cand_wer: Mapping[str, Any],
    cand_basis: Mapping[str, str],
    champion: Champion | None,
    tolerance: float,
    rescore: Rescore | None,
    model_name: str,
    cand_clips: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
) -> Decision:
    """The gate, on figures measured on the same clips: where the champion's recorded figure
    has another basis than the challenger's, or the same basis but no per-clip errors recorded
    while the challenger has them, ``rescore`` scores the champion again first (without
    ``rescore``, the recorded figures are compared and the reasons say which differ). Languages
    with both versions' errors on the same clips are judged on their paired interval."""
    if champion is None:
        return decide(cand_wer, None, tolerance)
    clips = dict(cand_clips or {})
    unmatched = unmatched_languages(champion.basis, cand_basis, champion.wer)
    matched = [x for x in champion.wer if x in cand_basis and x not in unmatched]
    champ_clips = {x: champion.clip_errors[x] for x in matched if x in champion.clip_errors}
    missing = sorted(
        x for x in matched if x in clips and paired_clips(clips[x], champ_clips.get(x)) is None
    )
    again = sorted(set(unmatched) | set(missing)) if rescore is not None else []
    champ_wer = dict(champion.wer)
    if rescore is not None and again:
        answer = as_rescored(rescore(f"models:/{model_name}/{champion.version}", again))
        champ_wer |= dict(answer.wer)
        champ_clips |= {x: dict(answer.clips[x]) for x in again if x in answer.clips}
    paired = {
        x: pair for x in clips if (pair := paired_clips(clips[x], champ_clips.get(x))) is not None
    }
    decision = decide(cand_wer, champ_wer, tolerance, champion.version, paired)
    if again:
        recorded = {x: champion.wer[x] for x in again}
        return with_rescored(decision, recorded, same_clips=missing)
    if unmatched:
        note = (
            f"measured on other clips or decoding than the champion's: {', '.join(unmatched)} "
            "(compared as recorded)"
        )
        decision = dataclasses.replace(decision, reasons=[*decision.reasons, note])
    return decision


def lineage_tags(cand: Candidate) -> dict[str, str]:
    """Tags of the run and the version: kind and lineage (None values as "unknown")."""
    tags = {"kind": cand.kind, "wer": json.dumps(clean_scores(cand.wer), sort_keys=True)}
    tags["wer_basis"] = json.dumps(dict(cand.wer_basis), sort_keys=True)
    kind, multiple = audio_context_of_dir(cand.model_dir)
    tags |= {
        "audio_context": kind,
        "context_multiple_s": "none" if multiple is None else str(multiple),
        "context_margin_s": str(context_margin_of_dir(cand.model_dir)),
    }
    tags |= {str(k): "unknown" if v is None else str(v)[:MAX_TAG] for k, v in cand.lineage.items()}
    return tags


def _log_model(cand: Candidate, name: str, tags: dict[str, str]) -> str:
    """Log ``cand.model_dir`` as a pyfunc in the active run, register it with ``tags``.

    Tags go with the version's creation (one request, not one a tag: a remote registry answers
    each in a fraction of a second). Returns the new version.
    """
    import mlflow

    return str(mlflow.register_model(log_pyfunc(cand.model_dir), name, tags=tags).version)


def decision_tags(decision: Decision) -> dict[str, str]:
    """The decision as version tags: verdict, reasons, the champion it was judged against."""
    return {
        "decision": decision.verdict,
        "decision_reasons": " | ".join(decision.reasons)[:MAX_TAG],
        "decision_against": decision.champion_version or "none",
    }


def _set_aliases(client: MlflowClient, name: str, version: str, promote: bool) -> list[str]:
    """challenger/staging always; champion/production when promoted. Returns them."""
    aliases = list(CHALLENGER_ALIASES) + (list(CHAMPION_ALIASES) if promote else [])
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    return aliases


def _log_run_inputs(cand: Candidate, cfg: RegisterConfig) -> None:
    import mlflow

    mlflow.log_params({"register.model_name": cfg.model_name, "register.tolerance": cfg.tolerance})
    scores = {f"dev_wer.{k}": v for k, v in clean_scores(cand.wer).items() if v is not None}
    if scores:
        mlflow.log_metrics(scores | {"dev_wer_mean": sum(scores.values()) / len(scores)})


def register_model_dir(
    tracking: TrackingConfig, cfg: RegisterConfig, cand: Candidate, rescore: Rescore | None = None
) -> Registration:
    """Register ``cand`` as a new version, run the promotion gate (see :func:`judge`), record
    and return it."""
    import mlflow

    if not any(Path(cand.model_dir).glob("*.safetensors")):
        raise FileNotFoundError(f"{cand.model_dir}: no safetensors weights to register")
    client = registry_client(tracking)
    champion = current_champion(client, cfg.model_name)
    mlflow.set_experiment(tracking.experiment)
    tags = lineage_tags(cand)
    with mlflow.start_run(run_name=f"register-{cand.kind}", tags=tags) as run:
        _log_run_inputs(cand, cfg)
        if cand.clip_errors:
            mlflow.log_dict(to_record(cand.clip_errors), ARTIFACT)
        for page in cand.evaluation_files:
            mlflow.log_artifact(str(page), artifact_path="evaluation")
        decision = judge(
            cand.wer,
            cand.wer_basis,
            champion,
            cfg.tolerance,
            rescore,
            cfg.model_name,
            cand.clip_errors,
        )
        version = _log_model(cand, cfg.model_name, tags | decision_tags(decision))
        aliases = _set_aliases(client, cfg.model_name, version, decision.promote)
        card = render_model_card(
            CardInfo(
                cfg.model_name,
                version,
                cand.kind,
                cand.wer,
                cand.lineage,
                cand.data,
                decision,
                describe_audio_context(
                    *audio_context_of_dir(cand.model_dir), context_margin_of_dir(cand.model_dir)
                ),
            )
        )
        mlflow.log_text(card, "model_card.md")
        client.update_model_version(cfg.model_name, version, description=card)
        result = Registration(
            cfg.model_name,
            version,
            run.info.run_id,
            f"models:/{cfg.model_name}/{version}",
            aliases,
            decision,
        )
        mlflow.log_dict(result.to_dict(), "decision.json")
    return result


def promote_version(
    tracking: TrackingConfig, cfg: RegisterConfig, version: str, force: str | None = None
) -> dict[str, Any]:
    """Pass an existing version through the gate again (against today's champion) and move the
    champion aliases to it if it passes, or unconditionally with ``force`` (the operator's
    reason, recorded). The decision, for or against, is recorded as the version's tags."""
    client = registry_client(tracking)
    mv = client.get_model_version(cfg.model_name, version)
    champion = current_champion(client, cfg.model_name)
    if champion is not None and champion.version == str(version):
        champion = None if force else champion
        if not force:
            reasons = [f"version {version} is already the champion"]
            return _promotion_record(client, cfg.model_name, version, False, reasons)
    basis = json.loads(mv.tags.get("wer_basis", "{}"))
    wer = json.loads(mv.tags.get("wer", "{}"))
    clips = recorded_clip_errors(client, mv.run_id)
    decision = judge(wer, basis, champion, cfg.tolerance, None, cfg.model_name, clips)
    if force and not decision.promote:
        reasons = [f"forced by the operator: {force}", *decision.reasons]
        decision = dataclasses.replace(decision, promote=True, insufficient=False, reasons=reasons)
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(cfg.model_name, version, key, value)
    client.set_model_version_tag(cfg.model_name, version, "decision_by", "operator")
    if decision.promote:
        for alias in CHAMPION_ALIASES:
            client.set_registered_model_alias(cfg.model_name, alias, version)
    record = _promotion_record(client, cfg.model_name, version, decision.promote, decision.reasons)
    return record | {"decision": decision.to_dict()}


def _promotion_record(
    client: MlflowClient, name: str, version: str, promoted: bool, reasons: list[str]
) -> dict[str, Any]:
    aliases = sorted(client.get_model_version(name, version).aliases)
    return {
        "model_name": name,
        "version": str(version),
        "promoted": promoted,
        "aliases": aliases,
        "reasons": reasons,
    }


def registry_status(tracking: TrackingConfig, name: str) -> dict[str, Any]:
    """The registered versions of ``name``, newest first: aliases, kind, WER, decision."""
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking)
    try:
        aliases = client.get_registered_model(name).aliases  # alias -> version
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return {"model_name": name, "versions": []}
    rows = [
        {
            "version": str(v.version),
            "aliases": sorted(a for a, ver in aliases.items() if str(ver) == str(v.version)),
            "kind": v.tags.get("kind"),
            "decision": v.tags.get("decision"),
            "wer": json.loads(v.tags.get("wer", "{}")),
        }
        for v in sorted(versions, key=lambda v: -int(v.version))
    ]
    return {"model_name": name, "versions": rows}
