"""bench.results: the held-out split, the stage order, the run's params, the page."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.results_depth_page import default_depth
from bench.results_page import figures_of, render, write_page
from bench.results_plots import depth_png
from bench.results_project import (
    TEST,
    TRAIN,
    results_params,
    split_rows,
    stage_order,
    write_split,
)
from bench.results_sections import anchors
from bench.results_stats import interval_points, row_over
from bench.results_tables import stage_table, wer_table
from distilflow.config import load_params
from distilflow.evaluate.compare import build_comparisons
from distilflow.evaluate.metrics import (
    PairResult,
    build_metrics,
    finite,
    language_metrics,
    pair_metrics,
    transcript_records,
)
from distilflow.evaluate.models import ClipResult

from .helpers import REPO_ROOT, audio_bytes, read_params, tone, write_audiofolder, write_params


def corpus_rows(per_language: int = 10) -> list[dict[str, object]]:
    return [
        {"file_name": f"audio/{lang}{i}.wav", "text": "x", "language": lang}
        for lang in ("en", "fr")
        for i in range(per_language)
    ]


def test_split_is_seeded_stratified_and_disjoint() -> None:
    rows = corpus_rows()
    a = split_rows(rows, 3)
    b = split_rows(list(reversed(rows)), 3)
    assert a == {k: sorted(v, key=lambda r: (r["language"], r["file_name"])) for k, v in b.items()}
    test = [r["file_name"] for r in a[TEST]]
    assert len(test) == 6 and {r["language"] for r in a[TEST]} == {"en", "fr"}
    assert not set(test) & {r["file_name"] for r in a[TRAIN]}
    assert len(a[TRAIN]) + len(a[TEST]) == len(rows)
    # a language with few clips keeps at least half of them for training
    assert len(split_rows(corpus_rows(2), 30)[TEST]) == 2


def test_write_split_copies_audio_into_two_audiofolders(tmp_path: Path) -> None:
    corpus = write_audiofolder(
        tmp_path / "corpus",
        [
            {"file_name": f"{lang}{i}.wav", "bytes": audio_bytes(tone(0.2)), "text": "t",
             "language": lang}
            for lang in ("en", "fr")
            for i in range(4)
        ],
    )  # fmt: skip
    counts = write_split(corpus, tmp_path / "proj", 1)
    assert counts == {TRAIN: 6, TEST: 2}
    for part in (TRAIN, TEST):
        root = tmp_path / "proj" / "corpus" / part
        lines = (root / "metadata.jsonl").read_text().splitlines()
        assert len(lines) == counts[part]
        assert all((root / json.loads(x)["file_name"]).is_file() for x in lines)
    assert write_split(corpus, tmp_path / "proj", 1) == counts  # idempotent


def test_corpora_split_into_the_project_with_a_test_set_each(tmp_path: Path) -> None:
    from bench.results import write_corpora

    def corpus(name: str, lang: str, text: str | None) -> Path:
        rows = [
            {"file_name": f"{lang}{i}.wav", "bytes": audio_bytes(tone(0.2)), "language": lang}
            | ({"text": text} if text else {})
            for i in range(4)
        ]
        return write_audiofolder(tmp_path / name, rows)

    main, other = corpus("main", "en", "t"), corpus("read-ru", "ru", "т")
    unlabelled = corpus("voices", "fr", None)
    proj = write_corpora(tmp_path / "work", [main, other, unlabelled], 1)
    split = json.loads((tmp_path / "work" / "split.json").read_text())
    assert split[TRAIN] == 3 and split[TEST] == 1
    assert split["corpora"] == {
        "main": {TRAIN: 3, TEST: 1},
        "read-ru": {TRAIN: 3, TEST: 1},
        "voices": {TRAIN: 4},  # no transcripts: all training audio, for the teacher to label
    }
    params = load_params(proj / "params.yaml")
    assert [s.uri for s in params.ingest.sources] == [
        "corpus/train", "corpus/read-ru/train", "corpus/voices/train", "inbox"
    ]  # fmt: skip
    assert params.evaluate.extra_sets == {
        TEST: "corpus/test", "test-read-ru": "corpus/read-ru/test"
    }  # fmt: skip
    assert (proj / "corpus" / "voices" / "train" / "fr0.wav").is_file()


def test_results_params_pass_the_config_checks(tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", results_params(tmp_path / "cache")))
    assert params.evaluate.extra_sets == {TEST: f"corpus/{TEST}"}
    assert params.ingest.sources[0].uri == f"corpus/{TRAIN}"
    assert params.student.max_steps == 300


def test_stage_order_names_every_stage_of_dvc_yaml_after_its_deps() -> None:
    params = read_params()
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    names = set()
    for name, stage in dvc.items():
        if "foreach" in stage:
            section, key = stage["foreach"].strip("${}").split(".")
            names |= {f"{name}@{x}" for x in params[section][key]}
        else:
            names.add(name)
    order = stage_order(params)
    assert set(order) == names and len(order) == len(names)
    assert order.index("student") < order.index("experts@fr") < order.index("evaluate")
    assert order.index("evaluate-experts@fr") < order.index("evaluate") < order.index("register")


WORDS = ["cat", "dog", "sun", "moon", "tree", "bird", "fish", "rock", "star", "lake"]
LANGS = ("en", "es", "fr")  # test: en without experts, es and fr with
FESTVOX = "test-festvox-ru"


def clip(lang: str, i: int, errors: int, stop: str = "end") -> ClipResult:
    """A 10-word clip whose hypothesis has ``errors`` substituted words."""
    hyp = ["x"] * errors + WORDS[errors:]
    return ClipResult(f"{lang}{i}", lang, " ".join(WORDS), " ".join(hyp), 2.0, 0.4, 12, stop)


# errors per clip of each model, by language and clip index: the teacher 1 or 2; the student
# 2-4 (one loop in fr); the experts better than the student on es and fr; fine-tuning worse
ERRORS = {
    "teacher": lambda lang, i: 1 + i % 2,
    "student": lambda lang, i: 2 + i % 3,
    "experts": lambda lang, i: (2 + i % 3) if lang == "en" else 1 + i % 2,
    "finetune": lambda lang, i: 4 + i % 2,
    "lora": lambda lang, i: 2 + i % 3,
    "layers-3": lambda lang, i: 1 + i % 2,
}


def model_clips(model: str, langs: tuple[str, ...], n: int = 10) -> tuple[ClipResult, ...]:
    return tuple(
        clip(lang, i, ERRORS[model](lang, i),
             "loop_guard" if model == "student" and (lang, i) == ("fr", 0) else "end")
        for lang in langs
        for i in range(n)
    )  # fmt: skip


def fake_run() -> dict[str, Any]:
    """The raw inputs of the page (``figures_of``) for a run of two test sets."""
    results = [
        PairResult(m, s, m, m, 10 if m == "teacher" else 8, model_clips(m, langs))
        for s, langs in (("test", LANGS), (FESTVOX, ("ru",)))
        for m in ("teacher", "student", "experts")
    ]
    metrics = build_metrics(results, dict.fromkeys(("teacher", "student", "experts"), 500.0))
    metrics = json.loads(json.dumps(finite(metrics | {"comparisons": build_comparisons(results)})))
    baselines = {
        m: {lang: {"test": language_metrics(lang, model_clips(m, (lang,))),
                   "clips": [asdict(c) for c in model_clips(m, (lang,))]}
            for lang in ("es", "fr")}
        for m in ("finetune", "lora")
    }  # fmt: skip
    del baselines["lora"]["fr"]["clips"]  # an old baselines.json: point figures only
    depth: dict[str, Any] = {"pipeline_depth": 2, "depths": {}, "cost": {
        "clips": 4, "tokens": 80, "encoder_s_per_clip": 0.5,
        "decoder_ms_per_token": {"teacher": 20.0, "layers-2": 8.0, "layers-3": 11.0},
        "parameters": {"teacher": 10, "layers-2": 8, "layers-3": 9}}}  # fmt: skip
    for d, model in (("2", "student"), ("3", "layers-3")):
        clips = {"test": model_clips(model, LANGS), FESTVOX: model_clips(model, ("ru",))}
        depth["depths"][d] = {
            "sets": {s: pair_metrics(PairResult(model, s, "", "", 8, c)) for s, c in clips.items()},
            "clips": {s: [asdict(x) for x in c] for s, c in clips.items()},
            "parameters": 8 + int(d == "3"), "train_s": None if d == "2" else 600.0,
        }  # fmt: skip
    split = {TRAIN: 16, TEST: 24, "corpora": {
        "asterisk-dev": {TRAIN: 16, TEST: 24}, "festvox-ru": {TRAIN: 8, TEST: 8},
        "voices-unlabelled": {TRAIN: 5}}}  # fmt: skip
    return {
        "metrics": metrics, "baselines": baselines, "depth": depth, "split": split,
        "transcripts": transcript_records(results), "params": results_params(Path("cache")),
        "metas": {"voices-unlabelled": {TRAIN: [
            {"language": "es", "speaker": "a", "duration_s": 60.0}] * 5}},
        "provenance": {"command": "python -m bench.results c", "date": "d", "machine": "m"},
        "speed": SPEED, "labelling": None,
        "stages": [{"stage": "ingest", "wall_s": 61.4, "peak_rss_mb": 300.0}],
        "decision": {"version": "1", "decision": {"verdict": "promoted", "reasons": ["first"]}},
    }  # fmt: skip


SPEED = {
    "clips": 2,
    "parameters": {"teacher": 10, "student": 8, "ratio": 0.8},
    "end_to_end": {
        "seconds_per_clip": {"teacher": 1.0, "student": 0.8, "speculative": 2.0},
        "speedup_vs_teacher": {"teacher": 1.0, "student": 1.25, "speculative": 0.5},
        "speculative_identical_share": 1.0,
    },
    "per_step": {"encoder_s_per_clip": 0.6, "teacher_decoder_ms_per_token": 10.0,
                 "student_decoder_ms_per_token": 5.0, "decoder_speedup": 2.0, "tokens": 40},
}  # fmt: skip


def test_page_tables_and_anchors_state_the_figures() -> None:
    raw = fake_run()
    f = figures_of(raw)
    wer = f["test_wer"]
    table = wer_table(wer, ["en", "es", "fr"])
    assert "| es | 15.0 | 29.0 | **15.0** | 45.0 | 29.0 |" in table
    assert "mean (en, es, fr)" in table and "mean (es, fr)" in table  # like with like
    assert "1 min 01 s" in stage_table(f["stages"])
    text = anchors(f["comparisons"], SPEED, ["en", "es", "fr"], ["es", "fr"])
    assert "+14.0 [" in text and "1.25x" in text and "**Not met.**" in text
    assert "against fine-tuning -30.0 [-30.0, -30.0]: better" in text
    assert "**Not shown**: better by the point figure only against LoRA" in text
    page = render(f, raw["metrics"], None, None)
    assert "promoted" in page and "python -m bench.results c" in page
    assert "30-clip" not in page and "850" not in page  # no hard-coded sizes
    assert not any(math.isnan(v) for v in wer["teacher"].values())


def test_every_comparison_carries_its_interval_and_loops_apart() -> None:
    raw = fake_run()
    f = figures_of(raw)
    page = render(f, raw["metrics"], None, None)
    for set_name in ("test", FESTVOX):
        assert f"### `{set_name}`" in page and f"Paired differences on `{set_name}`" in page
    # the evaluation's own comparison, its interval in points, loops counted apart
    row = row_over(f["comparisons"], "test", "teacher", "student", ["fr"])
    assert row is not None and row["loops_baseline"] == 0 and row["loops"] == 1
    assert row["low"] is not None and row["low"] <= row["delta"] <= row["high"]
    assert f"| student − teacher | fr | 10 | 15.0 → 29.0 | {interval_points(row)} |" in page
    # a macro mean with its stratified interval; baselines against the student per clip
    mean_row = row_over(f["comparisons"], "test", "student", "finetune", ["es", "fr"])
    assert mean_row is not None and mean_row["high"] is not None and mean_row["clips"] == 20
    assert "| fine-tuning − student | mean (es, fr) | 20 |" in page
    # baselines.json without per-clip transcripts: the point figure, "no interval"
    old = row_over(f["comparisons"], "test", "student", "lora", ["fr"])
    assert old is not None and old["low"] is None and "(no interval)" in interval_points(old)
    # the second corpus's set: Russian only, no baselines
    festvox = [r for r in f["comparisons"] if r["set"] == FESTVOX]
    assert {r["language"] for r in festvox} == {"ru"}
    assert {r["model"] for r in festvox} == {"student", "experts"}
    assert "`festvox-ru`: 16 clips with transcripts" in page
    assert "`voices-unlabelled`: 5 clips without transcripts in es (1 speaker, 5 min" in page


def test_goals_are_checked_from_the_figures() -> None:
    raw = fake_run()
    f = figures_of(raw)
    by_goal = {g["goal"]: g for g in f["goals"]}
    assert set(by_goal) == {"a", "b", "c", "d", "e"}
    assert by_goal["a"]["met"] is False  # en: the experts are the student, 15 points over
    assert any(
        d.startswith("en:") and "missed by 13.0 points" in d for d in by_goal["a"]["details"]
    )
    assert any(d.startswith("es:") and "(Met)" in d for d in by_goal["a"]["details"])
    assert by_goal["b"]["met"] is False and "missed by 11.0 points" in by_goal["b"]["details"][0]
    assert by_goal["c"]["met"] is False and FESTVOX in by_goal["c"]["title"]
    # (d): better than the student and fine-tuning; LoRA better by its points only (fr without
    # per-clip transcripts): not shown; with them, met
    assert by_goal["d"]["met"] is None and "better (no interval)" in by_goal["d"]["details"][2]
    raw["baselines"]["lora"]["fr"]["clips"] = [asdict(c) for c in model_clips("lora", ("fr",))]
    assert {g["goal"]: g for g in figures_of(raw)["goals"]}["d"]["met"] is True
    assert "against student: 15.0 against 29.0" in by_goal["d"]["details"][0]
    assert by_goal["e"]["met"] is False  # the student looped once, the teacher never
    page = render(f, raw["metrics"], None, None)
    assert "## Goals" in page and "**Not met**" in page and "missed by" in page


def test_depth_sweep_table_default_and_plot(tmp_path: Path) -> None:
    raw = fake_run()
    f = figures_of(raw)
    depth = f["depth"]
    rows = {r["name"]: r for r in depth["rows"]}
    assert rows["teacher"]["seconds"] == 0.5 + 20 * 20.0 / 1000
    assert rows["layers-2"]["speedup"] == rows["teacher"]["seconds"] / (0.5 + 20 * 8.0 / 1000)
    # layers-3 has the teacher's transcripts: within 3 points, interval included; layers-2 not
    assert depth["default"] == {"depth": 3, "qualified": True, "row": rows["layers-3"]}
    page = render(f, raw["metrics"], None, None)
    assert "| decoder layers | parameters |" in page and "| 2 (pipeline) | 8 | 8.00 |" in page
    assert "**3 decoder layers**, the fastest depth that meets the rule" in page
    assert "differs from the pipeline's student (2 layers)" in page
    # nothing qualifies: the lowest mean WER on test
    worse = [r | {"sets": {s: v | {"vs_teacher": {"delta": 0.1, "low": 0.05, "high": 0.2}}
                           for s, v in r["sets"].items()}} for r in depth["rows"]]  # fmt: skip
    fallback = default_depth(worse, depth["sets"])
    assert fallback["depth"] == 3 and not fallback["qualified"]
    png = depth_png(depth["rows"], depth["sets"])
    assert png.startswith(b"\x89PNG")


def test_write_page_renders_every_file(tmp_path: Path) -> None:
    raw = fake_run()
    work, docs = tmp_path / "work", tmp_path / "docs"
    data = work / "project" / "data" / "evaluate"
    data.mkdir(parents=True)
    (data / "metrics.json").write_text(json.dumps(raw["metrics"]))
    (data / "transcripts.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in raw["transcripts"])
    )
    for name in ("baselines", "depth", "split", "speed", "stages"):
        (work / f"{name}.json").write_text(json.dumps(raw[name]))
    page = write_page(work, Path("asterisk-dev"), docs)
    for png in ("wer.png", "speed.png", "depth.png"):
        assert (docs / "results" / png).read_bytes().startswith(b"\x89PNG")
    figures = json.loads((docs / "bench" / "results.json").read_text())
    assert {g["goal"] for g in figures["goals"]} == {"a", "b", "c", "d", "e"}
    assert "clips" not in figures["baselines"]["finetune"]["es"]  # per-clip data stays out
    assert (docs / "RESULTS.md").read_text() == page and "![Decode time" in page


def test_an_old_run_renders_with_point_figures_only() -> None:
    """metrics.json without comparisons, no transcripts, no per-clip baselines, no depth
    sweep, split.json of one corpus: the page keeps the point figures and says so."""
    raw = fake_run()
    del raw["metrics"]["comparisons"]
    for langs in raw["baselines"].values():
        for row in langs.values():
            row.pop("clips", None)
    raw |= {"transcripts": [], "depth": None, "split": {TRAIN: 16, TEST: 24}, "metas": {}}
    raw["corpus"] = "asterisk-dev"
    f = figures_of(raw)
    assert all(r["low"] is None for r in f["comparisons"])
    page = render(f, raw["metrics"], None, None)
    assert "| student − teacher | fr | – | 15.0 → 29.0 | +14.0 (no interval) |" in page
    assert "(depth phase not run" in page and "`asterisk-dev`: 40 clips" in page
    assert {g["goal"]: g["met"] for g in f["goals"]}["d"] is None  # better, not shown


def test_a_phase_is_reused_only_for_the_same_inputs_unless_forced(tmp_path: Path) -> None:
    from bench.results import run_phase

    calls: list[str] = []

    def phase() -> None:
        calls.append("ran")
        (tmp_path / "speed.json").write_text("{}")

    run_phase(tmp_path, "speed", "k1", False, phase)
    run_phase(tmp_path, "speed", "k1", False, phase)  # same inputs: reused
    assert calls == ["ran"]
    run_phase(tmp_path, "speed", "k2", False, phase)  # the student changed: recomputed
    run_phase(tmp_path, "speed", "k2", True, phase)  # named in --phases: recomputed
    assert calls == ["ran"] * 3


# --- the record: phases run apart make one page ------------------------------------------------


def recorded(raw: dict[str, Any], date: str, commit: str) -> dict[str, Any]:
    """``raw`` as ``page_inputs`` gives it, each phase stamped with ``date`` and ``commit``."""
    from bench.results_record import PHASE_INPUTS, has_phase, params_key

    out = raw | {"params_key": params_key(raw["params"]), "data_key": "d1"}
    phases = [p for p, names in PHASE_INPUTS.items() if has_phase(out, names)]
    return out | {"phases": {p: {"date": date, "commit": commit} for p in phases}}


def test_merge_takes_the_phases_a_run_lacks_only_from_the_same_data_and_params() -> None:
    from bench.results_record import merge, params_key

    raw = fake_run()
    record = recorded(raw, "2026-12-03", "aaa")
    fresh = recorded(raw | {"depth": None, "baselines": None}, "2026-12-04", "bbb")
    merged, notes = merge(record, fresh)
    assert merged["depth"] == raw["depth"] and merged["baselines"] == raw["baselines"]
    assert merged["phases"]["depth"] == {"date": "2026-12-03", "commit": "aaa"}
    assert merged["phases"]["pipeline"] == {"date": "2026-12-04", "commit": "bbb"}
    assert notes == ["from the record: baselines (2026-12-03), depth (2026-12-03)"]
    assert merge(None, fresh) == (fresh | {"phases": fresh["phases"]}, [])
    assert merge(record, recorded(raw, "2026-12-04", "bbb"))[1] == []  # nothing lacking

    other = raw["params"] | {"student": raw["params"]["student"] | {"max_steps": 1}}
    merged, notes = merge(record, fresh | {"params_key": params_key(other)})
    assert merged["depth"] is None and notes == [
        "recorded baselines, depth not used: other params than this run"
    ]
    merged, notes = merge(record, fresh | {"data_key": "d2"})
    assert merged["depth"] is None and "other training data" in notes[0]
    # relabelled clips: taken only when asked, each such phase marked for the page
    merged, notes = merge(record, fresh | {"data_key": "d2"}, other_labels=True)
    assert merged["depth"] == raw["depth"] and merged["phases"]["depth"]["earlier_labels"]
    assert "earlier_labels" not in merged["phases"]["pipeline"]
    from bench.results_page import phase_dates

    assert "depth on 2026-12-03 (commit aaa, **on the earlier labels**)" in phase_dates(
        merged["phases"]
    )
    quiet = raw["params"] | {"label": raw["params"]["label"] | {"progress": True}}
    assert params_key(quiet) == params_key(raw["params"])  # progress bars change no figure
    older = raw["params"] | {"evaluate": dict(raw["params"]["evaluate"])}
    older["evaluate"].pop("explorer_audio_mb", None)  # a run before the option: its default
    assert params_key(older) == params_key(raw["params"])
    # a record whose stored key was hashed before an option existed is still matched on its
    # params, hashed again with today's config
    stale = record | {"params_key": "made-by-an-older-config"}
    assert merge(stale, fresh)[0]["depth"] == raw["depth"]


def test_a_page_is_completed_from_the_record_and_says_when_each_phase_ran(
    tmp_path: Path,
) -> None:
    """A run of the pipeline up to the filter and the depth sweep, with a record of the rest."""
    from bench.results_record import read_record, write_record

    raw = fake_run()
    work, docs, record = tmp_path / "work", tmp_path / "docs", tmp_path / "record.json"
    (work / "project" / "data").mkdir(parents=True)
    (work / "project" / "params.yaml").write_text(yaml.safe_dump(raw["params"]))
    (work / "depth.json").write_text(json.dumps(raw["depth"]))
    without_depth = recorded(raw | {"depth": None}, "2026-12-01", "aaa")
    write_record(record, without_depth | {"data_key": None})
    page = write_page(work, Path("asterisk-dev"), docs, record)
    assert "(depth phase not run" not in page and "![Decode time" in page
    assert "Its phases ran apart" in page and "pipeline on 2026-12-01 (commit aaa)" in page
    kept = read_record(record)
    assert kept is not None and kept["depth"] == raw["depth"]  # the record now holds it all
    assert kept["metrics"] == raw["metrics"] and set(kept["phases"]) >= {"pipeline", "depth"}


def test_the_data_key_reads_the_kept_rows_not_the_files_lineage(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.results_record import data_key

    def write(proj: Path, texts: list[str], commit: str) -> str | None:
        out = proj / "data" / "filtered" / "manifests"
        out.mkdir(parents=True, exist_ok=True)
        table = pa.table({"hash": ["a", "b"], "text": texts})
        pq.write_table(table.replace_schema_metadata({"git_commit": commit}), out / "es.parquet")
        return data_key(proj)

    assert data_key(tmp_path / "none") is None
    first = write(tmp_path / "p1", ["hola", "adiós"], "aaa")
    assert first == write(tmp_path / "p2", ["hola", "adiós"], "bbb")
    assert first != write(tmp_path / "p3", ["hola", "adios"], "aaa")


def test_deployed_rows_and_goal_verdicts() -> None:
    """Speed is total time over both sets; WER and loops are judged per set against the
    baseline; the teacher's own rows are references, not candidates."""
    from bench.results_deployed import deployed_rows, deployed_section, goal_verdicts

    def row(wer: float, s: float, loops: int = 0, delta: float | None = None) -> dict:
        f = {"wer": wer, "wer_low": wer - 2, "wer_high": wer + 2, "wer_per_language": {},
             "loops": loops, "seconds_per_clip": s, "seconds_per_audio_second": s / 3}  # fmt: skip
        if delta is not None:
            f |= {"minus_baseline": {"estimate": delta, "low": delta - 1, "high": delta + 1},
                  "speedup_over_baseline": 1.0 / s}  # fmt: skip
        return f

    sets = {
        "test": {"clips": 100, "baseline": "faster-whisper", "rows": {
            "faster-whisper": row(20.0, 1.0), "teacher ct2": row(19.0, 0.9, delta=-1.0),
            "fast ct2": row(20.5, 0.2, delta=0.5), "slow ct2": row(25.0, 0.5, 1, delta=5.0)}},
        "test-ru": {"clips": 50, "baseline": "faster-whisper", "rows": {
            "faster-whisper": row(20.0, 2.0), "teacher ct2": row(19.0, 1.8, delta=-1.0),
            "fast ct2": row(20.0, 0.5, delta=0.0), "slow ct2": row(21.0, 1.0, delta=1.0)}},
    }  # fmt: skip
    deployed = {"sets": sets, "command": "c", "date": "d", "machine": "m", "batch": 1,
                "threads": 2, "peak_rss_mb": {"fast ct2": 300.0}}  # fmt: skip
    rows = deployed_rows(deployed)
    assert len(rows) == 8 and rows[2]["peak_rss_mb"] == 300.0
    verdicts = goal_verdicts(rows, "faster-whisper")
    assert len(verdicts) == 2  # not the teacher's row
    fast = next(v for v in verdicts if "`fast ct2`" in v)
    assert "**met**" in fast and "4.44x" in fast  # (100 * 1 + 50 * 2) / (100 * 0.2 + 50 * 0.5)
    slow = next(v for v in verdicts if "`slow ct2`" in v)
    assert "**missed**" in slow and "+5.0" in slow
    page = "\n".join(deployed_section(deployed, None))
    assert "| fast ct2 | test | 100 | 20.5 [18.5, 22.5] | +0.5 [-0.5, +1.5] |" in page
    assert "Batch 8" not in page  # no batched run: no table

    from bench.results_deployed import batch_summary

    batched = batch_summary(deployed | {"batch": 8, "date": "d8"})
    assert set(batched["sets"]["test"]["rows"]["fast ct2"]) == {
        "wer", "wer_low", "wer_high", "loops", "seconds_per_clip", "speedup_over_baseline"
    }  # fmt: skip
    page = "\n".join(deployed_section(deployed | {"batched": batched}, None))
    assert "Batch 8 (d8" in page
    assert (
        "| fast ct2 | 20.5 [18.5, 22.5] | 0.200 | 5.00x | 20.0 [18.0, 22.0] | 0.500 | 2.00x |"
        in page
    )
    assert "| faster-whisper | 20.0 [18.0, 22.0] | 1.000 | 1.00x |" in page


def test_deployed_figures_leave_out_clips_without_reference_words() -> None:
    """A reference that normalises to nothing is left out of the WER, as the corpus WER does."""
    from bench.deployed import figures
    from distilflow.evaluate.sets import AudioClip

    clips = [
        AudioClip("a", "a.wav", "en", "red cat", "h1"),
        AudioClip("b", "b.wav", "en", "...", "h2"),
    ]
    base = figures(clips, ["red cat", "hello"], 2.0, 4.0, {})
    assert base["wer"] == 0.0 and base["seconds_per_clip"] == 1.0
    other = figures(clips, ["red", ""], 1.0, 4.0, base)
    assert other["wer"] == 50.0 and other["speedup_over_baseline"] == 2.0


def test_variants_carry_earlier_rows_and_compare_on_the_same_clips() -> None:
    """An earlier run's variant rows join a later benchmark on the same clips (their speed-up
    against their own baseline); each variant's test Δ is paired, clip by clip, with the teacher
    of its own run."""
    from bench.results_deployed import deployed_rows, goal_verdicts
    from bench.results_variants import (
        carry_rows,
        paired_difference,
        variants_section,
        with_teacher_differences,
    )

    refs = ["red cat sat", "blue dog ran", "green fox hid", "old man sang"]
    clips = [{"id": f"c{i}", "language": "en", "reference": r} for i, r in enumerate(refs)]

    def run(date: str, rows: dict, texts: dict) -> dict:
        transcripts = [c | {row: texts[row][i] for row in texts} for i, c in enumerate(clips)]
        sets = {"test": {"clips": 4, "baseline": "faster-whisper", "rows": rows,
                         "transcripts": transcripts}}  # fmt: skip
        return {"date": date, "sets": sets, "peak_rss_mb": dict.fromkeys(rows, 100.0)}

    f = {"wer": 0.0, "wer_low": 0.0, "wer_high": 0.0, "loops": 0,
         "seconds_per_audio_second": 0.1}  # fmt: skip
    earlier = run(
        "2026-12-04",
        {"faster-whisper": f | {"seconds_per_clip": 2.0},
         "teacher ct2": f | {"seconds_per_clip": 2.0},
         "dynamic-6 ct2": f | {"seconds_per_clip": 0.5, "speedup_over_baseline": 4.0}},
        {"faster-whisper": refs, "teacher ct2": refs,
         "dynamic-6 ct2": ["red cat sat", "blue dog", "green fox hid", "old man sang"]},
    )  # fmt: skip
    fresh = run(
        "2026-12-05",
        {"faster-whisper": f | {"seconds_per_clip": 1.0},
         "teacher ct2": f | {"seconds_per_clip": 1.0},
         "dynamic-6-l2s ct2": f | {"seconds_per_clip": 0.5, "speedup_over_baseline": 2.0,
                                   "minus_baseline": {"estimate": 0, "low": 0, "high": 0}}},
        {"faster-whisper": refs, "teacher ct2": ["red cat", *refs[1:]], "dynamic-6-l2s ct2": refs},
    )  # fmt: skip
    out, carried = carry_rows(fresh, earlier)
    assert carried == ["dynamic-6 ct2"] and "dynamic-6 ct2" not in fresh["sets"]["test"]["rows"]
    test = out["sets"]["test"]
    carried_row = test["rows"]["dynamic-6 ct2"]
    assert carried_row["run"] == "2026-12-04"
    assert carried_row["minus_teacher"]["estimate"] == pytest.approx(100 / 12)  # its own teacher
    assert test["transcripts"][1]["dynamic-6 ct2"] == "blue dog"
    diff = paired_difference(test, "dynamic-6 ct2", "dynamic-6-l2s ct2")
    assert diff is not None and diff["estimate"] == pytest.approx(-100 / 12)  # one word fewer
    rows = deployed_rows(out)
    verdict = next(v for v in goal_verdicts(rows, "faster-whisper") if "`dynamic-6 ct2`" in v)
    assert "4.00x" in verdict  # against its own run's baseline (2.0 s), not today's (1.0 s)
    other = dict(earlier, sets={"test": dict(earlier["sets"]["test"], transcripts=clips[:3])})
    assert carry_rows(fresh, other)[1] == []  # other clips: nothing is carried
    context = {
        "dynamic-6": {"best_step": 200, "dev_wer_mean": 0.2, "dev_wer": {"en": 0.2},
                      "train_s": 2000.0},
        "dynamic-6-l2s": {"best_step": 200, "steps": 200, "dev_wer_mean": 0.1,
                          "dev_wer": {"en": 0.1}, "train_s": 1000.0},
    }  # fmt: skip
    page = "\n".join(variants_section(context, with_teacher_differences(out)))
    assert "| dynamic-6-l2s | as dynamic-6, plus sentence-level" in page
    assert "| 200 | 10.0 | 5.0 | -8.3 [" in page  # today's teacher missed a word l2s did not
    assert "| 200 | 20.0 | 10.0 | +8.3 [" in page and "4.00x (earlier run, 2026-12-04)" in page
    assert "| dynamic-6-l2s | 10.0 |" in page
    # carried again into a third run: dynamic-6 keeps the run that made it and its own Δ
    third = run("2026-12-06", {"faster-whisper": f | {"seconds_per_clip": 3.0},
                               "teacher ct2": f | {"seconds_per_clip": 3.0}},
                {"faster-whisper": refs, "teacher ct2": ["red", *refs[1:]]})  # fmt: skip
    again = carry_rows(third, with_teacher_differences(out))[0]["sets"]["test"]["rows"]
    assert again["dynamic-6 ct2"]["run"] == "2026-12-04"
    assert again["dynamic-6 ct2"]["baseline_seconds_per_clip"] == 2.0
    assert again["dynamic-6 ct2"]["minus_teacher"]["estimate"] == pytest.approx(100 / 12)
    assert again["dynamic-6-l2s ct2"]["run"] == "2026-12-05"
