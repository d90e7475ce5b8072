"""The evaluation stage on tiny random Whispers and real speech clips, through its Prefect flows:
the whole evaluation in one flow run, the per-language flows (the DVC stages) and the report."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from distilflow.config import load_params
from distilflow.training.data import split_of

from .helpers import ASTERISK, project_params, read_params, write_params

DEV_FRACTION = 0.5
LANGUAGES = ("en", "fr")
PAIR = ("teacher", "student")  # the models of most runs
ALL_MODELS = ("teacher", "student", "experts")  # no experts trained: the shared path


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models decode 20x slower with two threads on busy cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> Path:
    """Tiny teacher and student, a filtered manifest of real clips, an out-of-domain folder;
    ``params-base.yaml`` for ``evaluate_params``. Shared by the module's tests: each writes in
    an output folder of its own."""
    from distilflow.testing import save_tiny_whisper

    if not (ASTERISK / "metadata.jsonl").exists():
        pytest.skip(f"asterisk-dev corpus not found at {ASTERISK}")
    tmp = tmp_path_factory.mktemp("evaluate")
    save_tiny_whisper(tmp / "student" / "model", seed=1, decoder_layers=1)
    lines = (ASTERISK / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(x) for x in lines]
    dev, ood = [], []
    for r in rows:
        if r["language"] not in LANGUAGES:
            continue
        clip_hash = hashlib.sha256(r["file_name"].encode()).hexdigest()
        is_dev = split_of(clip_hash, DEV_FRACTION) == "dev"
        if is_dev and sum(d["language"] == r["language"] for d in dev) < 2:
            dev.append(r | {"hash": clip_hash})
        elif not is_dev and sum(o["language"] == r["language"] for o in ood) < 2:
            ood.append(r)
    manifest = pd.DataFrame(
        {
            "id": [d["hash"][:16] for d in dev],
            "hash": [d["hash"] for d in dev],
            "path": [str(ASTERISK / d["file_name"]) for d in dev],
            "language": [d["language"] for d in dev],
            "reference": [d["text"] for d in dev],
            "text": [d["text"] for d in dev],
        }
    )
    (tmp / "filtered" / "manifests").mkdir(parents=True)
    for lang in LANGUAGES:
        manifest[manifest["language"] == lang].to_parquet(
            tmp / "filtered" / "manifests" / f"{lang}.parquet"
        )
    (tmp / "ood" / "audio").mkdir(parents=True)
    with (tmp / "ood" / "metadata.jsonl").open("w", encoding="utf-8") as fh:
        for r in ood:
            shutil.copy(ASTERISK / r["file_name"], tmp / "ood" / r["file_name"])
            fh.write(json.dumps(r) + "\n")
    raw = read_params(project_params(tmp, tiny_teacher))
    raw["student"].update(out_dir=str(tmp / "student"), dev_fraction=DEV_FRACTION)
    raw["experts"]["out_dir"] = str(tmp / "experts")  # none trained: the shared path
    write_params(tmp / "params-base.yaml", raw)
    return tmp


def evaluate_params(project: Path, out: str, **evaluate: object) -> Path:
    """``params-<out>.yaml``: the project's params, evaluating into ``project/<out>``."""
    raw = read_params(project / "params-base.yaml")
    raw["evaluate"] = {
        "out_dir": str(project / out),
        "models": list(PAIR),
        "languages": list(LANGUAGES),
        "extra_sets": {"ood": str(project / "ood")},
        "max_new_tokens": 6,
        "max_clips_per_language": 2,
        "device": "cpu",
    } | evaluate
    return write_params(project / f"params-{out}.yaml", raw)


@dataclass(frozen=True)
class Evaluation:
    params: Path
    out: Path
    metrics: dict[str, Any]
    flow_run_id: Any


@pytest.fixture(scope="module")
def evaluation(prefect_harness: None, project: Path) -> Evaluation:
    """The whole evaluation in one flow run: every model on every set (read only: several
    tests check it)."""
    from flows.evaluate import evaluate_flow

    params = evaluate_params(project, "one", models=list(ALL_MODELS))
    state = evaluate_flow(str(params), return_state=True)
    metrics = state.result()
    return Evaluation(params, project / "one", metrics, state.state_details.flow_run_id)


def check_outputs(out: Path, metrics: dict[str, object], names: tuple[str, ...] = PAIR) -> None:
    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk == metrics
    assert set(on_disk["sets"]) == {"dev", "ood"}
    for set_name in ("dev", "ood"):
        assert set(on_disk["sets"][set_name]) == set(names)
        for model in names:
            langs = on_disk["sets"][set_name][model]["languages"]
            assert set(langs) == set(LANGUAGES)
            for values in langs.values():
                assert values["clips"] == 2 and values["rtf"] > 0 and values["tokens_per_s"] >= 0
                assert values["repeated_5grams"] >= 0
                assert {"wer", "wer_orthographic", "insertion_rate"} <= set(values)
    models = on_disk["models"]
    assert models["student"]["parameters"] < models["teacher"]["parameters"]
    assert all(m["peak_memory_mb"] > 0 for m in models.values())
    for png in ("wer_by_language.png", "speed_vs_wer.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(out / "plots" / "metrics_by_language.csv")
    assert len(csv) == 2 * len(names) * len(LANGUAGES)  # sets x models x languages
    report = (out / "report.md").read_text(encoding="utf-8")
    assert all(f"| {model} |" in report for model in names)
    assert "plots/wer_by_language.png" in report and "## Set `ood`" in report
    record = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert record["lineage"]["teacher_id"] == record["models"]["teacher"]["id"]
    transcripts = (out / "transcripts.jsonl").read_text().splitlines()
    assert len(transcripts) == 2 * len(names) * 4  # sets x models x clips
    stops = {json.loads(line)["stop"] for line in transcripts}
    assert stops <= {"end", "loop_guard", "max_new_tokens"}
    check_comparisons(on_disk, report, names)


def check_comparisons(metrics: dict[str, Any], report: str, names: tuple[str, ...]) -> None:
    """Every model against the teacher, the experts against the student, per set and language."""
    from distilflow.evaluate.compare import comparison_pairs

    for set_name in ("dev", "ood"):
        for base, model in comparison_pairs(list(names)):
            langs = metrics["comparisons"][set_name][base][model]
            assert set(langs) == set(LANGUAGES)
            for v in langs.values():
                assert v["clips"] == 2 and v["low"] <= v["delta"] <= v["high"]
                assert 0 <= v["loops"] <= 2 and v["settled_clips"] <= 2
        assert f"Paired differences on `{set_name}`" in report
    loops = [
        v["loops"]
        for s in metrics["sets"].values()
        for m in s.values()
        for v in m["languages"].values()
    ]
    assert all(0 <= x <= 2 for x in loops)


def test_evaluate_flow_end_to_end(evaluation: Evaluation) -> None:
    """The outputs on disk, and the report published as the flow run's markdown artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    check_outputs(evaluation.out, evaluation.metrics, ALL_MODELS)
    of_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[evaluation.flow_run_id]))
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=of_run)
    assert artifact.key == "evaluation-report"
    assert artifact.data == (evaluation.out / "report.md").read_text(encoding="utf-8")


def test_missing_student_is_named(project: Path) -> None:
    from distilflow.evaluate.stage import eval_models

    params = load_params(evaluate_params(project, "none"))
    params = replace(params, student=replace(params.student, out_dir=str(project / "nowhere")))
    with pytest.raises(FileNotFoundError, match="run the student stage"):
        eval_models(params, None)


def test_prepare_hook_runs_before_each_language(project: Path) -> None:
    """The extension point for experts: prepare(model, language) before each language's clips."""
    from distilflow.evaluate.models import EvalModel, transcribe_clips, whisper_model
    from distilflow.evaluate.sets import dev_set

    calls: list[str] = []

    def route(model: object, language: str) -> object:
        calls.append(language)
        return model

    plain = whisper_model("student", str(project / "student" / "model"), None)
    routed = EvalModel("experts", plain.ref, plain.load, prepare=route)
    loaded = routed.load()
    clips = dev_set(project / "filtered", DEV_FRACTION).clips
    results = transcribe_clips(routed, loaded.model, loaded.processor, "dev", clips, 4)
    assert calls == list(LANGUAGES)
    assert [r.language for r in results] == sorted(c.language for c in clips)
    assert all(r.tokens <= 4 and r.decode_s > 0 and r.audio_s > 0 for r in results)


TIMINGS = {"rtf", "tokens_per_s", "peak_memory_mb"}


def without_timings(value: object) -> object:
    """Metrics with the measures that depend on the clock (or the process) left out."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


def test_per_language_stages_merge_into_the_one_process_metrics(
    project: Path, evaluation: Evaluation
) -> None:
    """evaluate-lang@en, evaluate-lang@fr, evaluate-experts@fr and the evaluate stage give the
    metrics of one process (speed aside: the clock differs), with the experts model too."""
    from distilflow.evaluate.results import results_path
    from flows.evaluate import evaluate_language_flow, evaluate_report_flow

    raw = read_params(evaluate_params(project, "fanout", models=list(ALL_MODELS)))
    raw["experts"]["languages"] = ["fr"]  # fr's experts model gets its own stage
    path = write_params(project / "params-fanout.yaml", raw)
    params = load_params(path)
    paths = [Path(evaluate_language_flow(str(path), lang)) for lang in LANGUAGES]
    paths.append(Path(evaluate_language_flow(str(path), "fr", "experts")))
    assert paths[-1] == results_path(params.evaluate.out_dir, "experts", "fr")
    record = json.loads(paths[-1].read_text(encoding="utf-8"))
    assert record["language"] == "fr" and {r["model"] for r in record["results"]} == {"experts"}
    en = json.loads(paths[0].read_text(encoding="utf-8"))
    assert {r["model"] for r in en["results"]} == {"teacher", "student", "experts"}
    assert {c["language"] for r in en["results"] for c in r["clips"]} == {"en"}
    assert en["lineage"]["params_hash"] and en["lineage"]["git_commit"]
    fr = json.loads(paths[1].read_text(encoding="utf-8"))
    assert {r["model"] for r in fr["results"]} == {"teacher", "student"}  # experts: its stage
    merged = evaluate_report_flow(str(path))
    whole = evaluation.metrics  # the same models and sets in one flow run
    assert without_timings(merged) == without_timings(whole)
    assert set(merged["models"]) == {"teacher", "student", "experts"}
    assert all(m["peak_memory_mb"] > 0 for m in merged["models"].values())
    transcripts = (project / "fanout" / "transcripts.jsonl").read_text().splitlines()
    assert len(transcripts) == 3 * 2 * 4  # models x sets x clips


def test_the_report_refuses_stale_or_missing_languages(
    prefect_harness: None, project: Path
) -> None:
    """The report flow fails on missing, stale or incomplete per-language results (a flow
    called directly raises what failed it)."""
    from distilflow.evaluate.results import StaleResultsError, results_path
    from flows.evaluate import evaluate_language_flow, evaluate_report_flow

    path = evaluate_params(project, "stale")
    with pytest.raises(FileNotFoundError, match="run its per-language evaluation stage"):
        evaluate_report_flow(str(path))
    for lang in LANGUAGES:
        evaluate_language_flow(str(path), lang)
    other = evaluate_params(
        project, "stale-other", max_new_tokens=5, out_dir=str(project / "stale")
    )
    with pytest.raises(StaleResultsError, match="re-run the per-language stage of en"):
        evaluate_report_flow(str(other))
    fr = results_path(load_params(path).evaluate.out_dir, "languages", "fr")
    record = json.loads(fr.read_text(encoding="utf-8"))
    record["results"][0]["clips"] = record["results"][0]["clips"][:1]  # a clip short
    fr.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(StaleResultsError, match=r"teacher on dev: .*\['fr'\]"):
        evaluate_report_flow(str(path))


def test_a_release_scored_again_gives_the_evaluations_figures(
    project: Path, evaluation: Evaluation
) -> None:
    """What the promotion gate does when the champion was scored on other clips: the release
    decoded again on the evaluation's dev clips gives the evaluation's WER, to the digit; dev
    clips that are no longer the evaluation's are refused by name."""
    from distilflow.evaluate.results import StaleResultsError
    from distilflow.register.clip_errors import clip_errors_of
    from distilflow.register.rescore import decoding_of, score_release_clips
    from distilflow.register.wer_basis import bases_of

    params, metrics = load_params(evaluation.params), evaluation.metrics
    lines = (evaluation.out / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    bases = bases_of([json.loads(x) for x in lines], "student", "dev", decoding_of(params))
    assert sorted(bases) == list(LANGUAGES)
    student = project / "student" / "model"
    again = score_release_clips(params, student, list(LANGUAGES), bases)
    evaluated = metrics["sets"]["dev"]["student"]["languages"]
    assert dict(again.wer) == {lang: evaluated[lang]["wer"] for lang in LANGUAGES}
    # and, for the gate's paired comparison, the evaluation's per-clip errors to the clip
    rows = [json.loads(x) for x in lines]
    assert again.clips == clip_errors_of(rows, dict.fromkeys(LANGUAGES, "student"), "dev")
    assert sum(len(c) for c in again.clips.values()) > 0
    with pytest.raises(StaleResultsError, match="fr: the evaluation's dev clips are not today's"):
        score_release_clips(params, student, ["fr"], bases | {"fr": "other clips"})


def test_a_language_without_clips_writes_empty_results(
    prefect_harness: None, project: Path
) -> None:
    from flows.evaluate import evaluate_language_flow

    path = evaluate_params(project, "empty", languages=["en", "fr", "es"])
    (project / "filtered" / "manifests" / "es.parquet").write_bytes(
        (project / "filtered" / "manifests" / "fr.parquet").read_bytes()
    )
    pd.read_parquet(project / "filtered" / "manifests" / "es.parquet").iloc[:0].to_parquet(
        project / "filtered" / "manifests" / "es.parquet"
    )
    try:
        out = Path(evaluate_language_flow(str(path), "es"))
        record = json.loads(out.read_text(encoding="utf-8"))
        assert record["results"] == [] and record["sets"] == {}
    finally:
        (project / "filtered" / "manifests" / "es.parquet").unlink()


def test_language_flows_and_report_flow_on_a_dask_cluster(
    prefect_harness: None, project: Path
) -> None:
    """``runner: {kind: dask}``: the per-language flow's pairs mapped over a local Dask cluster
    (one worker process), then the report flow."""
    from flows.evaluate import evaluate_language_flow, evaluate_report_flow
    from tasks.runners import on_runner

    path = evaluate_params(project, "dask")
    raw = read_params(path)
    raw["runner"] = {"kind": "dask", "workers": 1, "address": ""}
    path = str(write_params(path, raw))
    for lang in LANGUAGES:
        on_runner(evaluate_language_flow, path)(path, lang)
    check_outputs(project / "dask", evaluate_report_flow(path))
