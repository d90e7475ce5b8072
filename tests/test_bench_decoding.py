"""The long-audio benchmark's pure parts: joining clips, the 30 s cuts, which sentences a cut
falls into, each sentence's share of a file's errors, and the distance of segment starts; the
speculative benchmark's speed-up interval; the decoder-cost line fit."""

from __future__ import annotations

import numpy as np
import pytest

from bench.longform import (
    cut_sentences,
    join_clips,
    sentence_errors,
    sentence_words,
    start_errors,
    window_cuts,
)
from distilflow.decoding.subtitles import Segment
from distilflow.text import error_rate_corpus


def test_join_clips_and_cuts() -> None:
    one, two = np.ones(16_000, np.float32), np.ones(8_000, np.float32)
    audio, spans = join_clips([one, two], gap_s=0.5)
    assert audio.size == 16_000 + 8_000 + 8_000
    assert spans == [(0.0, 1.0), (1.5, 2.0)]
    assert audio[16_000:24_000].sum() == 0  # the gap is silence
    assert [w.size for w in window_cuts(np.zeros(16_000 * 65, np.float32))] == [
        480_000,
        480_000,
        80_000,
    ]
    spans = [(0.0, 10.0), (25.0, 31.0), (31.5, 59.0), (59.5, 61.0), (61.5, 62.0)]
    assert cut_sentences(spans) == [1, 3]  # the sentences that hold 30 s and 60 s


def test_sentence_errors_sum_to_the_file() -> None:
    refs = ["Le chat dort.", "Il fait beau aujourd'hui.", "Fin."]
    hyp = "le chien dort il fait très beau aujourd'hui"  # 1 sub, 1 ins, 1 del ("fin")
    errors = sentence_errors("fr", refs, hyp)
    assert errors == [1, 1, 1]
    words = sentence_words("fr", refs)
    assert sum(errors) / sum(words) == error_rate_corpus("fr", [" ".join(refs)], [hyp])
    assert sentence_errors("fr", refs, "") == words  # nothing said: every word deleted
    assert sentence_errors("fr", refs, " ".join(refs)) == [0, 0, 0]


def test_start_errors() -> None:
    spans = [(0.0, 2.0), (2.5, 4.0), (10.0, 12.0)]
    segments = [Segment(0.0, 2.0, "a"), Segment(2.3, 4.0, "b"), Segment(9.0, 9.5, " ")]
    assert np.allclose(start_errors(spans, segments), [0.2, 7.7])  # the blank segment ignored
    assert start_errors(spans, []) == []


def test_safeguard_modes() -> None:
    from bench.safeguards import MODES, against_guard, mode_kwargs
    from distilflow.decoding.longform import LongForm
    from distilflow.decoding.loop_guard import LoopGuard
    from distilflow.testing import tiny_whisper

    model, _ = tiny_whisper()
    guard, longform = LoopGuard(3, 12), LongForm(temperatures=(0.0, 0.5))
    kwargs = {m: mode_kwargs(m, guard, longform, model) for m in MODES}
    assert kwargs["greedy"] == {}
    assert len(kwargs["guard"]["logits_processor"]) == 1
    assert kwargs["no_repeat_ngram"] == {"no_repeat_ngram_size": 5}
    assert kwargs["fallback"]["temperature"] == (0.0, 0.5)
    assert (
        "logits_processor" in kwargs["fallback_guard"] and "temperature" in kwargs["fallback_guard"]
    )
    with pytest.raises(ValueError, match="unknown mode"):
        mode_kwargs("beam", guard, longform, model)
    figures = {
        "guard": {"errors": [1, 0, 2], "words": [4, 0, 4]},  # a clip without words is left out
        "greedy": {"errors": [3, 5, 2], "words": [4, 0, 4]},
    }
    diff = against_guard(figures)["greedy"]
    assert diff is not None and abs(diff["estimate"] - 25.0) < 1e-9  # (3 + 2 - 1 - 2) / 8


def test_safeguard_score_is_the_corpus_wer() -> None:
    from bench.safeguards import score

    clips = [
        {"language": "fr", "text": "Le chat dort."},
        {"language": "fr", "text": "Il fait beau."},
        {"language": "es", "text": "(silencio)"},  # no reference words: left out of the WER
    ]
    texts = ["le chien dort", "il fait très beau", "hola hola hola hola hola hola"]
    out = score(clips, texts, budget_hits=1)
    refs, hyps = [c["text"] for c in clips[:2]], texts[:2]
    assert abs(out["wer"]["fr"] - 100 * error_rate_corpus("fr", refs, hyps)) < 1e-9
    assert out["words"] == [3, 3, 0] and out["errors"][:2] == [1, 1]
    assert out["repeated_5grams"] == 1 and out["budget_hits"] == 1


def test_speculative_ratio_interval() -> None:
    from bench.speculative import ratio_interval

    base = np.array([2.0, 2.0, 2.0, 2.0])
    low, high = ratio_interval(base, base / 2)  # every clip twice as fast: exactly 2x
    assert low == high == 2.0
    low, high = ratio_interval(base, np.array([1.0, 4.0, 1.0, 4.0]))
    assert low < 8 / 10 < high


def test_decoder_cost_line_fit() -> None:
    from bench.decoder_cost import line_fit

    fit = line_fit([6, 4, 2, 1], [2.0 + 0.5 * d for d in (6, 4, 2, 1)])
    assert fit == pytest.approx({"ms_per_layer": 0.5, "ms_without_layers": 2.0})
