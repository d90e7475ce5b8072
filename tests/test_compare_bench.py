"""bench.compare: the clips it samples and the table it prints (pure parts)."""

from __future__ import annotations

from bench.compare import seeded_sample, table
from distilflow.evaluate.metrics import PairResult
from distilflow.evaluate.models import ClipResult
from distilflow.evaluate.sets import AudioClip, EvalSet


def clips(n: int) -> tuple[AudioClip, ...]:
    return tuple(
        AudioClip(f"audio/{lang}_{i}.flac", f"/x/{lang}_{i}.flac", lang, "uno dos", f"h{lang}{i}")
        for lang in ("es", "fr")
        for i in range(n)
    )


def test_sample_excludes_then_caps_each_language_in_a_fixed_order() -> None:
    s = EvalSet("held-out", clips(10), {})
    a = seeded_sample(s, 3, {"es_0.flac", "fr_1.flac"})
    assert [c.language for c in a.clips].count("es") == 3
    assert [c.language for c in a.clips].count("fr") == 3
    assert not {"audio/es_0.flac", "audio/fr_1.flac"} & {c.id for c in a.clips}
    reordered = EvalSet("held-out", tuple(reversed(clips(10))), {})
    assert seeded_sample(reordered, 3, {"es_0.flac", "fr_1.flac"}).clips == a.clips
    assert len(seeded_sample(s, None, set()).clips) == 20


def result(model: str, hypotheses: list[str]) -> PairResult:
    rows = tuple(
        ClipResult(f"c{i}", "es", "uno dos", h, 1.0, 0.1, 2) for i, h in enumerate(hypotheses)
    )
    return PairResult(model, "held-out", model, model, 1, rows)


def test_table_gives_each_model_its_wer_and_paired_difference() -> None:
    results = {
        "held-out": {
            "teacher": result("teacher", ["uno dos"] * 4),
            "old": result("old", ["uno"] * 4),
            "new": result("new", ["uno dos", "uno dos", "uno dos", "uno"]),
        }
    }
    lines = table(results, "teacher", "old")
    new_es = next(x for x in lines if x.startswith("| es | new |"))
    assert "| 4 | 12.5 | 0 |" in new_es  # 1 error in 8 words
    assert "+12.5" in new_es and "-37.5" in new_es  # against the teacher, against the old recipe
    assert any(x.startswith("| all | teacher | 4 | 0.0 |") for x in lines)
