"""MLflow: the only module of the core that talks to it (tracking and the model registry).

The tracking URI is ``tracking.uri`` from params.yaml (SQLite by default, embedded and offline)
unless the environment sets ``MLFLOW_TRACKING_URI`` (a team server); the registry URI is
``MLFLOW_REGISTRY_URI`` or the tracking URI. Credentials for artifact stores come from the
environment only and are never logged.

Registry (:func:`register_model_dir`): a model directory becomes one version of
``register.model_name``, logged as an MLflow "models from code" pyfunc whose artifact is the
directory itself (safetensors, processor, generation config, side files, ``experts/`` when
present): nothing is pickled, and generic MLflow consumers (``mlflow.pyfunc.load_model``,
``mlflow models serve``) work too. Each version gets the aliases ``challenger`` and ``staging``;
the promotion gate (:mod:`distilflow.register.gate`) moves ``champion`` and ``production`` to it or
not, and the decision is recorded as version tags, as ``decision.json`` on the run and returned.

Consumers, one call::

    from distilflow.register.registry import load_registered
    model = load_registered("models:/distilflow-student@champion")
    text = model.transcribe(audio, language="fr")  # float32 numpy, 16 kHz mono
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distilflow.config import RegisterConfig, TrackingConfig
from distilflow.models.dynamic import audio_context_of_dir, describe_audio_context
from distilflow.register.gate import Decision, clean_scores, decide, with_rescored
from distilflow.register.model_card import CardInfo, render_model_card
from distilflow.register.wer_basis import unmatched_languages

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from distilflow.register.consumer import RegisteredWhisper

CHALLENGER_ALIASES = ("challenger", "staging")  # every new version
CHAMPION_ALIASES = ("champion", "production")  # promoted versions
WHISPER_ARTIFACT = "whisper"  # the pyfunc artifact key of the model directory
MAX_TAG = 5000  # characters kept of a long tag value


# What this process itself put in the environment: mlflow.set_tracking_uri (and
# set_registry_uri) also export MLFLOW_TRACKING_URI (MLFLOW_REGISTRY_URI), which must not pass
# for the user's team set-up on the next run in the same process (a worker, a test session).
_SET_HERE: dict[str, str] = {}


def _user_env(var: str) -> str | None:
    value = os.environ.get(var)
    return value if value and value != _SET_HERE.get(var) else None


def tracking_uri(cfg: TrackingConfig) -> str:
    return _user_env("MLFLOW_TRACKING_URI") or cfg.uri


def registry_uri(cfg: TrackingConfig) -> str:
    return _user_env("MLFLOW_REGISTRY_URI") or tracking_uri(cfg)


def use_tracking(cfg: TrackingConfig, registry: bool = False) -> None:
    """Point this process's MLflow at the configured tracking (and registry) URIs."""
    import mlflow

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    _SET_HERE["MLFLOW_TRACKING_URI"] = uri
    if registry:
        reg = registry_uri(cfg)
        mlflow.set_registry_uri(reg)
        _SET_HERE["MLFLOW_REGISTRY_URI"] = reg


class MlflowTracker:
    """Logs metrics to the active MLflow run (NaN values are skipped: MLflow plots them badly)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import mlflow

        clean = {k.replace("/", "."): float(v) for k, v in metrics.items() if not math.isnan(v)}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_artifacts(self, path: Path, artifact_path: str) -> None:
        import mlflow

        mlflow.log_artifacts(str(path), artifact_path=artifact_path)


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    """``{"lr": 1e-4}`` -> ``{"student.lr": "0.0001"}``; MLflow params are strings. Pure."""
    return {f"{prefix}.{k}": str(v)[:500] for k, v in values.items()}


@contextmanager
def tracking_run(
    cfg: TrackingConfig, run_name: str, params: dict[str, str], tags: dict[str, str]
) -> Iterator[MlflowTracker]:
    """An MLflow run in ``cfg.experiment`` with params and lineage tags set."""
    import mlflow

    use_tracking(cfg)
    mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(params)
        yield MlflowTracker(run.info.run_id)


# --- the registry ---------------------------------------------------------------------------

_PYFUNC_CODE = '''"""MLflow pyfunc of a distilflow Whisper (models from code; register.registry).

predict(model_input): a DataFrame or dict with "audio" (16 kHz mono float samples, one clip a
row) and optionally "language" (e.g. "fr"); returns one transcript a row. Weights load from
safetensors with transformers; nothing is unpickled, no remote code is trusted.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel
from transformers import WhisperForConditionalGeneration, WhisperProcessor


class DistilflowWhisper(PythonModel):
    # Free-form input (audio arrays): no type-hint validation (and no advice to add hints).
    _skip_type_hint_validation = True

    def load_context(self, context):
        path = context.artifacts["whisper"]
        try:  # where distilflow is installed: its consumer (experts, dynamic audio context)
            from distilflow.register.consumer import RegisteredWhisper
        except ImportError:
            RegisteredWhisper = None
        if RegisteredWhisper is not None:
            self.impl = RegisteredWhisper.from_dir(path)
            return
        self.impl = None
        self.model = WhisperForConditionalGeneration.from_pretrained(
            path, use_safetensors=True, local_files_only=True, trust_remote_code=False
        ).eval()
        record = getattr(self.model.config, "distilflow_student", None) or {}
        if record.get("audio_context", "padded") != "padded":
            raise RuntimeError(
                f"{path}: a dynamic-audio-context student runs only with distilflow installed "
                "(distilflow.register.registry.load_registered); plain transformers would pad it "
                "to 30 s"
            )
        self.processor = WhisperProcessor.from_pretrained(path, local_files_only=True)

    def _plain(self, audio, language, max_new_tokens):
        features = self.processor.feature_extractor(
            np.asarray(audio, dtype=np.float32), sampling_rate=16000, return_tensors="pt"
        ).input_features
        with torch.no_grad():
            ids = self.model.generate(
                features, language=language or None, task="transcribe",
                max_new_tokens=max_new_tokens,
            )
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()

    def predict(self, context, model_input, params=None):
        data = model_input.to_dict("list") if hasattr(model_input, "to_dict") else model_input
        audios = list(data["audio"])
        languages = list(data.get("language") or [None] * len(audios))
        tokens = int((params or {}).get("max_new_tokens", 128))
        out = []
        for audio, language in zip(audios, languages):
            samples = np.asarray(audio, dtype=np.float32)
            if self.impl is not None:
                text = self.impl.transcribe(samples, language or None, max_new_tokens=tokens)
            else:
                text = self._plain(samples, language, tokens)
            out.append(text)
        return out


mlflow.models.set_model(DistilflowWhisper())
'''


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


@dataclass(frozen=True)
class Champion:
    """The version holding the ``champion`` alias, with its recorded WER and their basis."""

    version: str
    wer: dict[str, Any]
    basis: dict[str, str]  # {} for versions registered before bases were recorded


# Scores a registered model (its ``models:/name/version`` URI) on the challenger's clips of the
# given languages, decoded as the challenger was: per-language WER. Given by the caller, which
# knows the evaluation; this module only calls it.
Rescore = Callable[[str, list[str]], Mapping[str, float]]


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
    )


def judge(
    cand_wer: Mapping[str, Any],
    cand_basis: Mapping[str, str],
    champion: Champion | None,
    tolerance: float,
    rescore: Rescore | None,
    model_name: str,
) -> Decision:
    """The gate, on figures measured on the same clips: where the champion's recorded figure
    has another basis than the challenger's, ``rescore`` scores the champion again first (without
    ``rescore``, the recorded figures are compared and the reasons say which differ)."""
    if champion is None:
        return decide(cand_wer, None, tolerance)
    unmatched = unmatched_languages(champion.basis, cand_basis, champion.wer)
    champ_wer = dict(champion.wer)
    if unmatched and rescore is not None:
        champ_wer |= dict(rescore(f"models:/{model_name}/{champion.version}", unmatched))
        recorded = {lang: champion.wer[lang] for lang in unmatched}
        return with_rescored(decide(cand_wer, champ_wer, tolerance, champion.version), recorded)
    decision = decide(cand_wer, champ_wer, tolerance, champion.version)
    if unmatched:
        note = (
            f"measured on other clips or decoding than the champion's: {', '.join(unmatched)} "
            "(compared as recorded)"
        )
        decision = dataclasses.replace(decision, reasons=[*decision.reasons, note])
    return decision


def pip_requirements() -> list[str]:
    """What the pyfunc needs, pinned to what is installed here."""
    names = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas")
    return [f"{n}=={metadata.version(n)}" for n in names]


def lineage_tags(cand: Candidate) -> dict[str, str]:
    """Tags of the run and the version: kind and lineage (None values as "unknown")."""
    tags = {"kind": cand.kind, "wer": json.dumps(clean_scores(cand.wer), sort_keys=True)}
    tags["wer_basis"] = json.dumps(dict(cand.wer_basis), sort_keys=True)
    kind, multiple = audio_context_of_dir(cand.model_dir)
    tags |= {
        "audio_context": kind,
        "context_multiple_s": "none" if multiple is None else str(multiple),
    }
    tags |= {str(k): "unknown" if v is None else str(v)[:MAX_TAG] for k, v in cand.lineage.items()}
    return tags


def _pyfunc_signature() -> Any:
    """Only the inference params (``max_new_tokens``); the input (audio arrays) is free-form."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(params=ParamSchema([ParamSpec("max_new_tokens", "long", 128)]))


def _log_model(cand: Candidate, name: str, tags: dict[str, str]) -> str:
    """Log ``cand.model_dir`` as a pyfunc in the active run, register it with ``tags``.

    Tags go with the version's creation (one request, not one a tag: a remote registry answers
    each in a fraction of a second). Returns the new version.
    """
    import mlflow

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # Known and intended: audio arrays are free-form input, so no input example.
        warnings.filterwarnings("ignore", message=".*input example")
        code = Path(tmp) / "distilflow_whisper.py"
        code.write_text(_PYFUNC_CODE, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={WHISPER_ARTIFACT: str(cand.model_dir)},
            pip_requirements=pip_requirements(),
            signature=_pyfunc_signature(),
        )
    return str(mlflow.register_model(info.model_uri, name, tags=tags).version)


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
        decision = judge(cand.wer, cand.wer_basis, champion, cfg.tolerance, rescore, cfg.model_name)
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
                describe_audio_context(*audio_context_of_dir(cand.model_dir)),
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
    decision = judge(wer, basis, champion, cfg.tolerance, None, cfg.model_name)
    if force and not decision.promote:
        reasons = [f"forced by the operator: {force}", *decision.reasons]
        decision = dataclasses.replace(decision, promote=True, reasons=reasons)
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


# --- consumers ------------------------------------------------------------------------------


def _cache_root(cache_dir: Path | str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("DISTILFLOW_CACHE") or Path.home() / ".cache" / "distilflow"
    return Path(base) / "registry"


def pinned_uri(uri: str, client: MlflowClient) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` (other URIs unchanged)."""
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/") :].rsplit("@", 1)
        return f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
    return uri


def download_model(
    uri: str, cache_dir: Path | str | None = None, tracking: str | None = None
) -> Path:
    """Download a logged model (once per tracking server and version) and return its folder."""
    import mlflow

    uri_t = tracking or mlflow.get_tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri_t, registry_uri=tracking)
    pinned = pinned_uri(uri, client)
    root = _cache_root(cache_dir)
    dst = root / hashlib.sha256(f"{uri_t}|{pinned}".encode()).hexdigest()[:16]
    version_pinned = pinned.startswith("models:/") and pinned.rsplit("/", 1)[-1].isdigit()
    if version_pinned and (dst / ".complete").is_file():
        return dst  # registry versions are immutable: download once
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    source = pinned
    if version_pinned:  # resolved by this client: download_artifacts asks the global registry
        name, version = pinned[len("models:/") :].rsplit("/", 1)
        source = client.get_model_version_download_uri(name, version)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(staging), tracking_uri=uri_t
        )
    )  # the model folder: staging itself, or a folder inside it named as the source's last part
    (local / ".complete").write_text(pinned + "\n", encoding="utf-8")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(local, dst)
    shutil.rmtree(staging, ignore_errors=True)
    return dst


def whisper_dir(model_root: Path) -> Path:
    """The transformers directory inside a downloaded model (the pyfunc's artifact)."""
    mlmodel = model_root / "MLmodel"
    if mlmodel.is_file():
        spec = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
        artifacts = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        if WHISPER_ARTIFACT in artifacts:
            inner = (model_root / str(artifacts[WHISPER_ARTIFACT]["path"])).resolve()
            if not inner.is_relative_to(model_root.resolve()):
                raise ValueError(f"{mlmodel}: artifact path {inner} leaves the model folder")
            return inner
    if (model_root / "config.json").is_file():
        return model_root
    raise FileNotFoundError(f"{model_root}: no Whisper model directory in this model")


def load_registered(
    uri: str, cache_dir: Path | str | None = None, tracking: str | None = None
) -> RegisteredWhisper:
    """Load a registered model for transcription: ``load_registered(uri).transcribe(audio, "fr")``.

    ``uri``: ``models:/<name>@<alias>`` (e.g. ``@champion``), ``models:/<name>/<version>``, or any
    MLflow artifact URI of a logged model. ``tracking``: the tracking (and registry) URI; default
    MLflow's (env ``MLFLOW_TRACKING_URI``). Downloads with MLflow into ``cache_dir`` (default
    ``$DISTILFLOW_CACHE/registry`` or ``~/.cache/distilflow/registry``), loads the weights
    from safetensors with transformers (no pickles, no remote code).
    """
    from distilflow.register.consumer import RegisteredWhisper

    return RegisteredWhisper.from_dir(whisper_dir(download_model(uri, cache_dir, tracking)))
