"""Prefect task: register the student in the MLflow model registry behind the promotion gate.

The metrics come from the student stage's ``report.json`` (``student.dev_wer``, per language);
:func:`read_metrics` is the one place that says so (the evaluation stage may replace it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from distilflow.atomic import atomic_write_json
from distilflow.config import Params
from distilflow.evaluate.explorer import EXPLORER
from distilflow.evaluate.results import StaleResultsError
from distilflow.evaluate.sets import DEV
from distilflow.lineage import git_commit
from distilflow.models.load import transformers_dir_fingerprint
from distilflow.register.clip_errors import Rescored, clip_errors_of
from distilflow.register.decode_file import serving_decode
from distilflow.register.download import download_model, whisper_dir
from distilflow.register.registry import Candidate, Rescore, register_model_dir
from distilflow.register.release import assemble, chosen_languages, dev_wer, release_wer
from distilflow.register.rescore import decoding_of, score_release_clips
from distilflow.register.wer_basis import bases_of
from distilflow.student.report import StudentReport
from tasks._env import cache_dir_of

DVC_LOCK = Path("dvc.lock")


def read_metrics(report: StudentReport) -> dict[str, float]:
    """Per-language dev WER of the model to register (NaN allowed: the gate explains it)."""
    return {str(k): float(v) for k, v in report.student.dev_wer.items()}


def dvc_dep_hash(lock: Path, stage: str, dep: str) -> str | None:
    """DVC's md5 of ``dep`` as recorded for ``stage`` in dvc.lock (None when not recorded)."""
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    for entry in stages.get(stage, {}).get("deps", []):
        if entry.get("path") == dep:
            return str(entry.get("md5")) if entry.get("md5") else None
    return None


def student_candidate(params: Params, lock: Path = DVC_LOCK) -> Candidate:
    """The model to register with its metrics, lineage and data summary.

    With the evaluation's metrics (``evaluate.out_dir/metrics.json``) holding the ``experts``
    model, the release is the student plus the experts that beat it on dev (see
    ``distilflow/register/release.py``), scored by the evaluation; otherwise the student alone,
    scored by the student stage's report. Either way the release is assembled in
    ``register.out_dir/model`` with the evaluation's decoding (``distilflow_decode.json``:
    ``evaluate.max_new_tokens`` and ``decode``), which consumers decode with. With the
    evaluation's figures come, per language, their basis and the per-clip errors behind them
    (from ``transcripts.jsonl``: the experts model's dev clips where experts ship, the
    student's elsewhere), which the gate pairs with the champion's.
    """
    out = Path(params.student.out_dir)
    report = StudentReport.read(out / "report.json")
    lineage: dict[str, Any] = report.lineage.to_dict()
    lineage["dvc_input_md5"] = dvc_dep_hash(lock, "student", params.filter.out_dir)
    lineage["registered_from_commit"] = git_commit()
    data = {
        "teacher": report.teacher.model,
        "train_clips": report.train_clips,
        "dev_clips": report.dev_clips,
        "train_languages": report.train_languages,
        "student_parameters": report.student.parameters,
        "teacher_dev_wer": report.teacher.dev_wer,
    }
    metrics_path = Path(params.evaluate.out_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
    student_wer, experts_wer = dev_wer(metrics, "student"), dev_wer(metrics, "experts")
    decode = serving_decode(params.evaluate.max_new_tokens, params.decode)
    release_dir = Path(params.register.out_dir) / "model"
    experts_out = Path(params.experts.out_dir)
    if not experts_wer:
        release = assemble(out / "model", experts_out, [], release_dir, decode)
        return Candidate(release, read_metrics(report), lineage, "student", data)
    check_evaluated_weights(params, out / "model")
    chosen = chosen_languages(student_wer, experts_wer)
    release = assemble(out / "model", experts_out, chosen, release_dir, decode)
    data |= {
        "experts": chosen,
        "student_alone_dev_wer": student_wer,
        "experts_dev_wer": experts_wer,
    }
    kind = "student+experts" if chosen else "student"
    wer = release_wer(student_wer, experts_wer, chosen)
    rows = transcript_rows(params)
    basis = {lang: b for lang, b in evaluated_basis(params, rows).items() if lang in wer}
    source = {lang: "experts" if lang in chosen else "student" for lang in wer}
    clips = clip_errors_of(rows, source, DEV)
    pages = tuple(
        p
        for name in ("report.md", EXPLORER, "metrics.json")
        if (p := Path(params.evaluate.out_dir) / name).is_file()
    )
    return Candidate(release, wer, lineage, kind, data, basis, clips, pages)


def check_evaluated_weights(params: Params, model_dir: Path) -> None:
    """The evaluation's figures are those of the student weights in ``model_dir``, or
    StaleResultsError (a student retrained since the evaluation ran, outside DVC)."""
    path = Path(params.evaluate.out_dir) / "report.json"
    scored = json.loads(path.read_text("utf-8")).get("models", {}).get("student", {}).get("id")
    here = transformers_dir_fingerprint(model_dir)
    if scored != here:
        raise StaleResultsError(
            f"{path}: the evaluation scored student weights {scored}, {model_dir} holds {here}: "
            "run the evaluation again before registering"
        )


def transcript_rows(params: Params) -> list[dict[str, Any]]:
    """The evaluation's transcripts.jsonl, one dict a clip ([] when there is none)."""
    path = Path(params.evaluate.out_dir) / "transcripts.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def evaluated_basis(params: Params, rows: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Per language, what the evaluation's dev WER was measured on (its transcripts.jsonl: the
    student's dev clips; the experts model scores the same clips of its languages)."""
    rows = transcript_rows(params) if rows is None else rows
    return bases_of(rows, "student", DEV, decoding_of(params)) if rows else {}


def champion_rescorer(params: Params, basis: Mapping[str, str]) -> Rescore:
    """Scores a registered champion again on the evaluation's dev clips of some languages, per
    language and per clip."""

    def rescore(uri: str, languages: list[str]) -> Rescored:
        cache = cache_dir_of(params.paths.cache_dir)
        directory = whisper_dir(download_model(uri, cache / "registry"))
        print(f"registry: scoring {uri} again on today's dev clips of {', '.join(languages)}")
        return score_release_clips(params, directory, languages, basis, cache)

    return rescore


def _transient(task: Task[Any, Any], run: TaskRun, state: State[Any]) -> bool:
    """Retry I/O failures (server, network, artifact store), not bad inputs."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, FileNotFoundError | KeyError | ValueError | TypeError)


@task(
    name="register-model",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_transient,
)
def register_student(params: Params) -> dict[str, Any]:
    """Register the student, apply the gate, write ``register.out_dir/decision.json``."""
    cand = student_candidate(params)
    rescore = champion_rescorer(params, cand.wer_basis)
    result = register_model_dir(params.tracking, params.register, cand, rescore)
    record = result.to_dict()
    atomic_write_json(Path(params.register.out_dir) / "decision.json", record)
    print(
        f"registry: {result.model_name} version {result.version} {result.decision.verdict} "
        f"(aliases {', '.join(result.aliases)})"
    )
    return record
