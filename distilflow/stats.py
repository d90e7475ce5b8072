"""Honest uncertainty for WERs measured on few clips: the corpus WER and bootstrap intervals.

A WER compared on a handful of clips (the demo's dev split has about four a language) moves by
tens of points with one clip that loops, so a difference between two systems means little
without its interval. Everything here works on per-clip counts: for each clip, its word errors
(substitutions + deletions + insertions against the normalised reference, as
``distilflow.text.clip_error_counts`` counts them; characters for languages without spaces) and
its reference words.

- ``corpus_wer``: sum(errors) / sum(words), the corpus-level WER every stage reports.
- ``wer_interval``: one system's corpus WER with the percentile interval of the clip bootstrap
  (clips resampled with replacement, the WER of each resample).
- ``paired_bootstrap``: the difference ``WER(b) - WER(a)`` of two systems scored on the same
  clips (negative: b makes fewer errors), with the percentile interval of the paired clip
  bootstrap: both systems are scored on the same resampled clips, so what the clips have in
  common (hard audio, a long reference) cancels out of the difference.

The resamples are drawn by numpy's ``default_rng(seed)``: the same inputs and seed give the same
interval. A clip without reference words is an error here: leave it out beforehand, as the
corpus WER does. Percentile intervals of the bootstrap are too narrow on very few clips (with
one clip the "interval" is a point): callers that decide on them should ask for a minimum
number of clips (the promotion gate does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

N_RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0
_CELLS = 4_000_000  # resample draws held in memory at once (a block of resamples x clips)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval: ``low <= estimate <= high`` in general (not
    guaranteed: the percentiles are of the resamples, the estimate is of the clips)."""

    estimate: float  # on all the clips
    low: float  # the (1 - confidence) / 2 percentile of the resamples
    high: float  # the (1 + confidence) / 2 percentile
    clips: int
    confidence: float
    resamples: int
    seed: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, float | int]:
        """JSON-safe (every figure finite)."""
        return asdict(self)


def corpus_wer(errors: Sequence[int], words: Sequence[int]) -> float | None:
    """sum(errors) / sum(words); None without any reference word (nothing was measured)."""
    err, wrd = _counts(errors, words)
    total = int(wrd.sum())
    return float(err.sum()) / total if total else None


def wer_interval(
    errors: Sequence[int],
    words: Sequence[int],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """One system's corpus WER with its clip-bootstrap interval; None for no clips."""
    err, wrd = _counts(errors, words)
    _check(wrd, n_resamples, confidence)
    if not len(wrd):
        return None
    rates = _resampled_ratios(err, wrd, n_resamples, seed)
    return _interval(float(err.sum() / wrd.sum()), rates, len(wrd), confidence, seed)


def paired_bootstrap(
    errors_a: Sequence[int],
    errors_b: Sequence[int],
    words: Sequence[int],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """``WER(b) - WER(a)`` on the same clips, with its paired-bootstrap interval.

    ``errors_a[i]`` and ``errors_b[i]`` are the two systems' errors on clip ``i``, whose
    reference has ``words[i]`` words. Each resample draws clips with replacement and scores both
    systems on those clips: its difference is ``sum(errors_b - errors_a) / sum(words)`` over the
    drawn clips. None for no clips. Raises ValueError on lengths that differ, negative errors, a
    clip without words, ``n_resamples < 1`` or a confidence outside (0, 1).
    """
    err_a, wrd = _counts(errors_a, words)
    err_b, _ = _counts(errors_b, words)
    _check(wrd, n_resamples, confidence)
    if not len(wrd):
        return None
    diff = err_b - err_a
    deltas = _resampled_ratios(diff, wrd, n_resamples, seed)
    return _interval(float(diff.sum() / wrd.sum()), deltas, len(wrd), confidence, seed)


def _counts(errors: Sequence[int], words: Sequence[int]) -> tuple[IntArray, IntArray]:
    err = np.asarray(errors, dtype=np.int64).reshape(-1)
    wrd = np.asarray(words, dtype=np.int64).reshape(-1)
    if err.shape != wrd.shape:
        raise ValueError(f"{len(err)} error counts for {len(wrd)} clips")
    if (err < 0).any():
        raise ValueError("error counts must be >= 0")
    return err, wrd


def _check(words: IntArray, n_resamples: int, confidence: float) -> None:
    if (words < 1).any():
        empty = int(np.flatnonzero(words < 1)[0])
        raise ValueError(
            f"clip {empty} has no reference words: leave such clips out (the corpus WER does)"
        )
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _resampled_ratios(
    numerator: IntArray, words: IntArray, n_resamples: int, seed: int
) -> npt.NDArray[np.float64]:
    """sum(numerator) / sum(words) over ``n_resamples`` draws of the clips with replacement,
    in blocks that keep at most ``_CELLS`` draws in memory (the block size depends on the
    number of clips only: the same inputs and seed draw the same resamples)."""
    rng = np.random.default_rng(seed)
    n = len(words)
    block = max(1, _CELLS // n)
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        out[start : start + rows] = numerator[idx].sum(axis=1) / words[idx].sum(axis=1)
    return out


def _interval(
    estimate: float, samples: npt.NDArray[np.float64], clips: int, confidence: float, seed: int
) -> Interval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return Interval(estimate, float(low), float(high), clips, confidence, len(samples), seed)
