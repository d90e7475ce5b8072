"""The evaluation stage on tiny random Whispers and real speech clips: core and Prefect flow."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

from distilflow.config import load_params
from distilflow.training.data import split_of

from .test_label_filter import project_params

DEV_FRACTION = 0.5
LANGUAGES = ("en", "fr")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models decode 20x slower with two threads on busy cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny teacher and student, a filtered manifest of real clips, an out-of-domain folder."""
    from distilflow.testing import save_tiny_whisper

    from .conftest import ASTERISK

    if not (ASTERISK / "metadata.jsonl").exists():
        pytest.skip(f"asterisk-dev corpus not found at {ASTERISK}")
    tmp = tmp_path_factory.mktemp("evaluate")
    save_tiny_whisper(tmp / "teacher", seed=1, decoder_layers=4)
    save_tiny_whisper(tmp / "student" / "model", seed=1, decoder_layers=1)
    rows = [json.loads(x) for x in (ASTERISK / "metadata.jsonl").open(encoding="utf-8")]
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
    return tmp


def evaluate_params(project: Path, out: str, **evaluate: object) -> Path:
    path = project_params(project, project / "teacher")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["student"].update(out_dir=str(project / "student"), dev_fraction=DEV_FRACTION)
    raw["evaluate"] = {
        "out_dir": str(project / out),
        "models": ["teacher", "student"],
        "languages": list(LANGUAGES),
        "extra_sets": {"ood": str(project / "ood")},
        "max_new_tokens": 6,
        "max_clips_per_language": 2,
        "device": "cpu",
    } | evaluate
    raw["experts"]["out_dir"] = str(project / "experts")  # none trained: the shared path
    path = project / f"params-{out}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def check_outputs(out: Path, metrics: dict[str, object]) -> None:
    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk == metrics
    assert set(on_disk["sets"]) == {"dev", "ood"}
    for set_name in ("dev", "ood"):
        assert set(on_disk["sets"][set_name]) == {"teacher", "student"}
        for model in ("teacher", "student"):
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
    assert len(csv) == 2 * 2 * len(LANGUAGES)  # sets x models x languages
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| teacher |" in report and "| student |" in report
    assert "plots/wer_by_language.png" in report and "## Set `ood`" in report
    record = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert record["lineage"]["teacher_id"] == record["models"]["teacher"]["id"]
    assert len((out / "transcripts.jsonl").read_text().splitlines()) == 2 * 2 * 4


def test_run_evaluation_end_to_end(project: Path) -> None:
    from distilflow.evaluate.stage import run_evaluation

    params = load_params(evaluate_params(project, "core"))
    metrics, markdown = run_evaluation(params, project / "cache")
    check_outputs(project / "core", metrics)
    assert markdown == (project / "core" / "report.md").read_text(encoding="utf-8")


def test_evaluate_flow(prefect_harness: None, project: Path) -> None:
    from flows.evaluate import evaluate_flow

    metrics = evaluate_flow(str(evaluate_params(project, "flow")))
    check_outputs(project / "flow", metrics)


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


def test_per_language_stages_merge_into_the_one_process_metrics(project: Path) -> None:
    """evaluate-lang@en, evaluate-lang@fr, evaluate-experts@fr and the evaluate stage give the
    metrics of one process (speed aside: the clock differs), with the experts model too."""
    from distilflow.evaluate.results import results_path
    from distilflow.evaluate.stage import run_evaluation, run_language, run_report

    models = {"models": ["teacher", "student", "experts"]}
    one = load_params(evaluate_params(project, "one", **models))
    raw = yaml.safe_load(evaluate_params(project, "fanout", **models).read_text(encoding="utf-8"))
    raw["experts"]["languages"] = ["fr"]  # fr's experts model gets its own stage
    path = project / "params-fanout.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    params = load_params(path)
    paths = [run_language(params, project / "cache", lang) for lang in LANGUAGES]
    paths.append(run_language(params, project / "cache", "fr", "experts"))
    assert paths[-1] == results_path(params.evaluate.out_dir, "experts", "fr")
    record = json.loads(paths[-1].read_text(encoding="utf-8"))
    assert record["language"] == "fr" and {r["model"] for r in record["results"]} == {"experts"}
    en = json.loads(paths[0].read_text(encoding="utf-8"))
    assert {r["model"] for r in en["results"]} == {"teacher", "student", "experts"}
    assert {c["language"] for r in en["results"] for c in r["clips"]} == {"en"}
    assert en["lineage"]["params_hash"] and en["lineage"]["git_commit"]
    fr = json.loads(paths[1].read_text(encoding="utf-8"))
    assert {r["model"] for r in fr["results"]} == {"teacher", "student"}  # experts: its stage
    merged, _ = run_report(params, project / "cache")
    whole, _ = run_evaluation(one, project / "cache")
    assert without_timings(merged) == without_timings(whole)
    assert set(merged["models"]) == {"teacher", "student", "experts"}
    assert all(m["peak_memory_mb"] > 0 for m in merged["models"].values())
    transcripts = (project / "fanout" / "transcripts.jsonl").read_text().splitlines()
    assert len(transcripts) == 3 * 2 * 4  # models x sets x clips


def test_the_report_refuses_stale_or_missing_languages(project: Path) -> None:
    from distilflow.evaluate.results import StaleResultsError, results_path
    from distilflow.evaluate.stage import run_language, run_report

    params = load_params(evaluate_params(project, "stale"))
    with pytest.raises(FileNotFoundError, match="run its per-language evaluation stage"):
        run_report(params, None)
    for lang in LANGUAGES:
        run_language(params, None, lang)
    other = load_params(evaluate_params(project, "stale", max_new_tokens=5))
    with pytest.raises(StaleResultsError, match="re-run the per-language stage of en"):
        run_report(other, None)
    fr = results_path(params.evaluate.out_dir, "languages", "fr")
    record = json.loads(fr.read_text(encoding="utf-8"))
    record["results"][0]["clips"] = record["results"][0]["clips"][:1]  # a clip short
    fr.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(StaleResultsError, match=r"teacher on dev: .*\['fr'\]"):
        run_report(params, None)


def test_a_release_scored_again_gives_the_evaluations_figures(project: Path) -> None:
    """What the promotion gate does when the champion was scored on other clips: the release
    decoded again on the evaluation's dev clips gives the evaluation's WER, to the digit; dev
    clips that are no longer the evaluation's are refused by name."""
    from distilflow.evaluate.results import StaleResultsError
    from distilflow.evaluate.stage import run_evaluation
    from distilflow.register.rescore import decoding_of, score_release
    from distilflow.register.wer_basis import bases_of

    params = load_params(evaluate_params(project, "again", models=["student"], extra_sets={}))
    metrics, _ = run_evaluation(params, None)
    lines = (project / "again" / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    bases = bases_of([json.loads(x) for x in lines], "student", "dev", decoding_of(params))
    assert sorted(bases) == list(LANGUAGES)
    student = project / "student" / "model"
    scores = score_release(params, student, list(LANGUAGES), bases)
    evaluated = metrics["sets"]["dev"]["student"]["languages"]
    assert scores == {lang: evaluated[lang]["wer"] for lang in LANGUAGES}
    with pytest.raises(StaleResultsError, match="fr: the evaluation's dev clips are not today's"):
        score_release(params, student, ["fr"], bases | {"fr": "other clips"})


def test_a_language_without_clips_writes_empty_results(project: Path) -> None:
    from distilflow.evaluate.stage import run_language

    raw = yaml.safe_load(evaluate_params(project, "empty").read_text(encoding="utf-8"))
    raw["evaluate"]["languages"] = ["en", "fr", "es"]
    path = project / "params-empty.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    (project / "filtered" / "manifests" / "es.parquet").write_bytes(
        (project / "filtered" / "manifests" / "fr.parquet").read_bytes()
    )
    pd.read_parquet(project / "filtered" / "manifests" / "es.parquet").iloc[:0].to_parquet(
        project / "filtered" / "manifests" / "es.parquet"
    )
    try:
        out = run_language(load_params(path), None, "es")
        record = json.loads(out.read_text(encoding="utf-8"))
        assert record["results"] == [] and record["sets"] == {}
    finally:
        (project / "filtered" / "manifests" / "es.parquet").unlink()


def test_language_flows_and_report_flow_on_a_dask_cluster(
    prefect_harness: None, project: Path
) -> None:
    """The per-language flow's pairs mapped over a local Dask cluster, then the report flow."""
    from prefect_dask import DaskTaskRunner

    from flows.evaluate import evaluate_language_flow, evaluate_report_flow

    path = str(evaluate_params(project, "dask"))
    runner = DaskTaskRunner(
        cluster_kwargs={"n_workers": 1, "processes": False, "threads_per_worker": 1}
    )
    for lang in LANGUAGES:
        evaluate_language_flow.with_options(task_runner=runner)(path, lang)
    check_outputs(project / "dask", evaluate_report_flow(path))
