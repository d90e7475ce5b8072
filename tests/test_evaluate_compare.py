"""The evaluation's paired comparisons and loop counts: pure functions on synthetic results."""

from __future__ import annotations

import json

import pytest

from distilflow.evaluate.compare import (
    build_comparisons,
    comparison_markdown,
    comparison_pairs,
    comparison_rows,
    interval_text,
)
from distilflow.evaluate.metrics import PairResult, build_metrics, finite, language_metrics
from distilflow.evaluate.models import END, LOOP_GUARD, TOKEN_BUDGET, ClipResult, stop_of


def clip(i: int, lang: str, ref: str, hyp: str, stop: str = END) -> ClipResult:
    return ClipResult(f"{lang}{i}", lang, ref, hyp, 1.0, 0.1, 3, stop)


def test_stop_of_names_how_a_transcript_ended() -> None:
    assert stop_of([1, 2, 3], [1, 2, 3], 10) == END
    assert stop_of([1, 2, 1, 2, 1, 2], [1, 2], 10) == LOOP_GUARD
    assert stop_of(list(range(10)), list(range(10)), 10) == TOKEN_BUDGET
    assert (
        clip(0, "en", "a", "a", LOOP_GUARD).looped and clip(0, "en", "a", "a", TOKEN_BUDGET).looped
    )
    assert not clip(0, "en", "a", "a").looped


def test_loops_are_a_measure() -> None:
    clips = [clip(0, "en", "a b", "a b"), clip(1, "en", "c", "c c c", TOKEN_BUDGET)]
    assert language_metrics("en", clips)["loops"] == 1.0
    metrics = build_metrics([PairResult("student", "dev", "r", "i", 1, tuple(clips))], {})
    assert metrics["sets"]["dev"]["student"]["mean"]["loops"] == 1.0


def test_comparison_pairs() -> None:
    assert comparison_pairs(["teacher", "student", "experts"]) == [
        ("teacher", "student"),
        ("teacher", "experts"),
        ("student", "experts"),
    ]
    assert comparison_pairs(["student", "experts"]) == [("student", "experts")]
    assert comparison_pairs(["teacher"]) == []


def results() -> list[PairResult]:
    refs = ["the cat sat down", "a dog ran", "big red", "blue green sky", "..."]
    teacher = tuple(clip(i, "en", r, r) for i, r in enumerate(refs))
    student = (
        clip(0, "en", refs[0], "the cat sat"),  # 1 error
        clip(1, "en", refs[1], "a dog ran"),
        clip(2, "en", refs[2], "big red red red red", LOOP_GUARD),  # 3 insertions
        clip(3, "en", refs[3], "blue green"),  # 1 error
        clip(4, "en", refs[4], "noise"),  # no reference words: left out
    )
    fr = (clip(0, "fr", "un deux", "un deux"),)
    return [
        PairResult("teacher", "dev", "t", "t", 10, (*teacher, *fr)),
        PairResult("student", "dev", "s", "s", 5, (*student, *fr)),
    ]


def test_paired_comparison_with_loops_apart() -> None:
    comp = build_comparisons(results())
    en = comp["dev"]["teacher"]["student"]["en"]
    assert en["clips"] == 4 and en["wer_baseline"] == 0.0
    assert en["wer"] == pytest.approx(5 / 12) and en["delta"] == pytest.approx(5 / 12)
    assert 0.0 <= en["low"] <= en["delta"] <= en["high"]
    assert (en["loops_baseline"], en["loops"]) == (0, 1)
    assert en["settled_clips"] == 3 and en["settled_delta"] == pytest.approx(2 / 10)
    fr = comp["dev"]["teacher"]["student"]["fr"]
    assert (fr["clips"], fr["delta"], fr["low"], fr["high"]) == (1, 0.0, 0.0, 0.0)
    assert set(comp["dev"]) == {"teacher"}  # no experts model: nothing against the student


def test_rows_and_markdown_for_reports() -> None:
    metrics = finite({"comparisons": build_comparisons(results())})
    json.dumps(metrics, allow_nan=False)
    rows = comparison_rows(metrics)
    assert [(r["set"], r["baseline"], r["model"], r["language"]) for r in rows] == [
        ("dev", "teacher", "student", "en"),
        ("dev", "teacher", "student", "fr"),
    ]
    assert comparison_rows({}) == []
    lines = comparison_markdown(metrics, "dev")
    assert any(
        line.startswith("| en | student − teacher | 4 | 0.000 → 0.417 | +0.417 [") for line in lines
    )
    assert "| 0 → 1 |" in lines[-2]
    assert comparison_markdown(metrics, "ood") == []
    assert interval_text(None, None, None) == "–"
    assert interval_text(0.1, -0.05, 0.25) == "+0.100 [-0.050, +0.250]"
