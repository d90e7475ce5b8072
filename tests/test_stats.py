"""distilflow.stats: corpus WER and bootstrap intervals of per-clip counts (pure, seeded)."""

from __future__ import annotations

import numpy as np
import pytest

from distilflow.stats import Interval, corpus_wer, paired_bootstrap, wer_interval
from distilflow.text import clip_error_counts, error_rate_corpus

ERRORS = [0, 3, 1, 7, 2, 0, 4, 1]
WORDS = [5, 8, 4, 9, 6, 3, 10, 5]


def test_corpus_wer_is_errors_over_words() -> None:
    assert corpus_wer(ERRORS, WORDS) == pytest.approx(18 / 50)
    assert corpus_wer([], []) is None
    assert corpus_wer([0], [0]) is None


def test_clip_counts_sum_to_the_corpus_wer() -> None:
    refs = ["Hello, world!", "the cat sat", "  ", "go home now"]
    hyps = ["hello word", "", "anything", "go go home now now"]
    counts = [clip_error_counts("en", r, h) for r, h in zip(refs, hyps, strict=True)]
    assert counts[2] == (0, 0)  # no reference words: left out, as the corpus WER leaves it
    errors, words = zip(*counts, strict=True)
    assert corpus_wer(errors, words) == pytest.approx(error_rate_corpus("en", refs, hyps))
    # characters for languages without spaces, as the CER counts them
    assert clip_error_counts("ja", "東京 都", "東京") == (2, 4)
    assert error_rate_corpus("ja", ["東京 都"], ["東京"]) == pytest.approx(2 / 4)


def test_identical_systems_differ_by_zero() -> None:
    interval = paired_bootstrap(ERRORS, ERRORS, WORDS)
    assert interval is not None
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert interval.contains(0.0) and interval.clips == len(WORDS)


def test_better_on_every_clip_excludes_zero() -> None:
    worse = [e + 1 for e in ERRORS]  # b makes one error more than a on every clip
    up = paired_bootstrap(ERRORS, worse, WORDS)
    assert up is not None and up.low > 0 and not up.contains(0.0)
    assert up.estimate == pytest.approx(len(WORDS) / sum(WORDS))
    down = paired_bootstrap(worse, ERRORS, WORDS)  # the other way round: strictly better
    assert down is not None and down.high < 0 and not down.contains(0.0)
    assert down.estimate == pytest.approx(-up.estimate)


def test_delta_is_b_minus_a_and_the_interval_brackets_it() -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(3, 15, size=40)
    a = rng.binomial(words, 0.2)
    b = rng.binomial(words, 0.3)
    interval = paired_bootstrap(a.tolist(), b.tolist(), words.tolist(), n_resamples=3000)
    assert interval is not None
    expected = (b.sum() - a.sum()) / words.sum()
    assert interval.estimate == pytest.approx(expected)
    assert interval.low < interval.estimate < interval.high
    wider = paired_bootstrap(a.tolist(), b.tolist(), words.tolist(), confidence=0.99)
    assert wider is not None and wider.low <= interval.low and wider.high >= interval.high


def test_determinism_by_seed() -> None:
    first = paired_bootstrap(ERRORS, WORDS, [w + 1 for w in WORDS], seed=7)
    again = paired_bootstrap(ERRORS, WORDS, [w + 1 for w in WORDS], seed=7)
    other = paired_bootstrap(ERRORS, WORDS, [w + 1 for w in WORDS], seed=8)
    assert first == again
    assert (
        other is not None
        and first is not None
        and (other.low, other.high)
        != (
            first.low,
            first.high,
        )
    )
    assert wer_interval(ERRORS, WORDS, seed=3) == wer_interval(ERRORS, WORDS, seed=3)


def test_one_system_interval() -> None:
    interval = wer_interval(ERRORS, WORDS)
    assert isinstance(interval, Interval)
    assert interval.estimate == pytest.approx(18 / 50)
    assert 0.0 <= interval.low < interval.estimate < interval.high
    assert interval.to_dict()["resamples"] == 2000
    one = wer_interval([2], [4])  # one clip: every resample is that clip
    assert one is not None and one.low == one.high == one.estimate == 0.5


def test_many_clips_are_drawn_in_blocks() -> None:
    """More draws than one block holds: still the right estimate and a tight interval."""
    n = 5000
    words = [10] * n
    interval = paired_bootstrap([1] * n, [2] * n, words, n_resamples=1000)
    assert interval is not None and interval.low == interval.high == pytest.approx(0.1)


def test_edge_cases_are_errors_or_none() -> None:
    assert paired_bootstrap([], [], []) is None
    assert wer_interval([], []) is None
    with pytest.raises(ValueError, match="no reference words"):
        paired_bootstrap([0, 1], [0, 1], [3, 0])
    with pytest.raises(ValueError, match="error counts for"):
        paired_bootstrap([0, 1], [0], [3, 4])
    with pytest.raises(ValueError, match=">= 0"):
        wer_interval([-1], [3])
    with pytest.raises(ValueError, match="n_resamples"):
        wer_interval([1], [3], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1], [1], [3], confidence=1.0)
