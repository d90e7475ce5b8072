"""Hallucination measures of transcripts: repeated n-grams and insertions. Pure functions.

- ``repeated_ngrams``: how many word n-grams of one hypothesis (n = 5 by default) repeat an
  n-gram seen earlier in it: the number of n-gram occurrences beyond the first of each distinct
  n-gram. ``"a b c d e a b c d e"`` holds six 5-grams, five distinct ones, so 1. A looping
  decoder ("thank you thank you ...") scores high; normal speech scores 0.
- ``insertion_rate_corpus``: insertions / reference words over a whole corpus, from jiwer's
  alignment of the normalised texts (the same normalisation as the WER). Words the model adds
  that nobody said are the other face of hallucination.

Languages written without spaces (``NO_SPACE_LANGUAGES``) count characters instead of words,
as their error rate is a CER.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import jiwer

from distilflow.languages import NO_SPACE_LANGUAGES
from distilflow.text import NormalizerName, normalize

REPEAT_N = 5  # the n of the repeated n-gram count


def units(text: str, language: str | None = None) -> list[str]:
    """Words of ``text`` (whitespace-split), or its characters for languages without spaces."""
    if language in NO_SPACE_LANGUAGES:
        return [c for c in text if not c.isspace()]
    return text.split()


def repeated_ngrams(tokens: Sequence[str], n: int = REPEAT_N) -> int:
    """Occurrences of n-grams beyond the first of each distinct n-gram. Pure.

    Zero when ``tokens`` is shorter than ``n + 1`` (at most one n-gram).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return sum(count - 1 for count in grams.values())


def repeated_ngrams_text(
    text: str, language: str, normalizer: NormalizerName, n: int = REPEAT_N
) -> int:
    """``repeated_ngrams`` of a hypothesis after the WER's normalisation (punctuation cannot
    hide a loop)."""
    return repeated_ngrams(units(normalize(text, normalizer, strip_accents=True), language), n)


def insertion_counts(
    language: str, references: Sequence[str], hypotheses: Sequence[str]
) -> tuple[int, int]:
    """(insertions, reference words) of already-normalised pairs; empty references left out.

    Characters instead of words for languages without spaces.
    """
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return 0, 0
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    if language in NO_SPACE_LANGUAGES:
        chars = jiwer.process_characters(refs, hyps)
        return chars.insertions, chars.hits + chars.substitutions + chars.deletions
    words = jiwer.process_words(refs, hyps)
    return words.insertions, words.hits + words.substitutions + words.deletions


def insertion_rate_corpus(
    language: str,
    references: Sequence[str],
    hypotheses: Sequence[str],
    normalizer: NormalizerName,
) -> float:
    """Corpus-level insertions / reference words after ``normalize(.., strip_accents=True)``.

    NaN when no reference has a word left after normalisation.
    """
    refs = [normalize(r, normalizer, strip_accents=True) for r in references]
    hyps = [normalize(h, normalizer, strip_accents=True) for h in hypotheses]
    inserted, words = insertion_counts(language, refs, hyps)
    return inserted / words if words else float("nan")
