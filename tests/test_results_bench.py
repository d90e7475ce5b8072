"""bench.results: the held-out split, the stage order, the run's params, the page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from bench.results_page import anchors, held_out_wer, render, stage_table, wer_table
from bench.results_project import (
    TEST,
    TRAIN,
    results_params,
    split_rows,
    stage_order,
    write_split,
)
from distilflow.config import load_params

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


def lang_metrics(wer: float) -> dict[str, float]:
    return {"wer": wer, "insertion_rate": 0.01, "repeated_5grams": 0.0, "clips": 3.0}


def fake_figures() -> tuple[dict, dict]:  # type: ignore[type-arg]
    langs = {"en": 0.05, "fr": 0.2}
    pair = {
        "languages": {k: lang_metrics(v) for k, v in langs.items()},
        "mean": lang_metrics(0.1),
    }
    metrics = {
        "sets": {"test": {"teacher": pair, "student": pair, "experts": pair}},
        "models": {
            m: {"parameters": 10, "rtf": 0.2, "tokens_per_s": 30.0, "peak_memory_mb": 500.0,
                "wer_mean": 0.1}
            for m in ("teacher", "student", "experts")
        },
    }  # fmt: skip
    baselines = {m: {"fr": {"test": lang_metrics(0.3)}} for m in ("finetune", "lora")}
    speed = {
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
    figures = {
        "provenance": {"command": "python -m bench.results c", "date": "d", "machine": "m"},
        "split": {TRAIN: 8, TEST: 2},
        "test_wer": held_out_wer(metrics, baselines),
        "baselines": baselines,
        "speed": speed,
        "labelling": None,
        "stages": [{"stage": "ingest", "wall_s": 61.4, "peak_rss_mb": 300.0}],
        "decision": {"version": "1", "decision": {"verdict": "promoted", "reasons": ["first"]}},
    }
    return figures, metrics


def test_page_tables_and_anchors_state_the_figures() -> None:
    figures, metrics = fake_figures()
    wer = figures["test_wer"]
    table = wer_table(wer, ["en", "fr"])
    assert "| fr | 20.0 | **20.0** | **20.0** | 30.0 | 30.0 |" in table
    assert "mean (fr)" in table  # baselines exist for fr only: the mean compares like with like
    assert "1 min 01 s" in stage_table(figures["stages"])
    text = anchors(wer, figures["speed"], ["en", "fr"])
    assert "+0.0 WER points" in text and "1.25x" in text and "**Not met.**" in text
    assert "or tied in 1 of 1 languages, better than the student alone in 0" in text
    page = render(figures, metrics, None, None, Path("asterisk-dev"))
    assert "promoted" in page and "python -m bench.results c" in page
    assert not any(math.isnan(v) for v in wer["teacher"].values())


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
