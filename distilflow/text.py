"""Text measures shared by every stage: Whisper's normalisers, WER/CER, compression ratio.

Pure functions of strings. The filter's keep/drop rule, the dev scores during training, the
evaluation and the export check all score text through this one module.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Literal, cast

import jiwer

from distilflow.languages import NO_SPACE_LANGUAGES

NormalizerName = Literal["english", "basic", "none"]

Normalizer = Callable[[str], str]


@cache
def _english() -> Normalizer:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    # No spelling map: transformers ships it only inside a tokenizer's normalizer.json.
    return cast(Normalizer, EnglishTextNormalizer({}))  # type: ignore[no-untyped-call]


@cache
def _basic(strip_accents: bool) -> Normalizer:
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return cast(Normalizer, BasicTextNormalizer(remove_diacritics=strip_accents))


def normalize(text: str, normalizer: NormalizerName, strip_accents: bool = False) -> str:
    """Whisper's text normalisation, then whitespace collapsed."""
    if normalizer == "english":
        out = _english()(text)
        if strip_accents:
            out = _basic(True)(out)
    elif normalizer == "basic":
        out = _basic(strip_accents)(text)
    else:
        out = text
    return re.sub(r"\s+", " ", str(out)).strip()


def compression_ratio(text: str) -> float:
    """len(utf-8 bytes) / len(zlib-compressed bytes), as Whisper computes it."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def error_rate(reference: str, hypothesis: str, use_cer: bool) -> float:
    """WER or CER of normalised strings; an empty hypothesis against a reference scores 1.0."""
    if not hypothesis:
        return 1.0
    return float(jiwer.cer(reference, hypothesis) if use_cer else jiwer.wer(reference, hypothesis))


def is_uppercase(text: str) -> bool:
    """True when the text has at least two cased letters and all of them are upper case.

    A single capital ("C." for the letter c) is a normal transcript, not the failure mode.
    """
    cased = [c for c in text if c.isupper() or c.islower()]
    return len(cased) >= 2 and all(c.isupper() for c in cased)


def normalizer_for(language: str) -> NormalizerName:
    return "english" if language == "en" else "basic"


def error_rate_corpus(language: str, references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level WER (CER for languages without spaces) after Whisper's normalisers.

    References that normalise to nothing are left out; an empty hypothesis counts as deletions.
    """
    norm = normalizer_for(language)
    return _corpus_rate(
        language,
        [normalize(r, norm, strip_accents=True) for r in references],
        [normalize(h, norm, strip_accents=True) for h in hypotheses],
    )


def error_rate_orthographic(
    language: str, references: Sequence[str], hypotheses: Sequence[str]
) -> float:
    """Corpus-level WER (CER without spaces) of the raw texts: case, punctuation and accents
    count; only whitespace is collapsed. Empty references are left out."""
    return _corpus_rate(
        language,
        [normalize(r, "none") for r in references],
        [normalize(h, "none") for h in hypotheses],
    )


def _corpus_rate(language: str, refs: Sequence[str], hyps: Sequence[str]) -> float:
    """WER (CER for languages without spaces) of prepared pairs; NaN when no reference is left."""
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        return float("nan")
    measure = jiwer.cer if language in NO_SPACE_LANGUAGES else jiwer.wer
    return float(measure([p[0] for p in pairs], [p[1] for p in pairs]))


def clip_alignment(language: str, reference: str, hypothesis: str) -> tuple[str, str, Any]:
    """(reference, hypothesis, alignment) of one clip as ``error_rate_corpus`` reads it:
    Whisper's normaliser, accents stripped; jiwer's word alignment, or its character alignment
    for languages without spaces. The alignment is None where the reference normalises to
    nothing (the corpus WER leaves such a clip out)."""
    norm = normalizer_for(language)
    ref = normalize(reference, norm, strip_accents=True)
    hyp = normalize(hypothesis, norm, strip_accents=True)
    if not ref:
        return ref, hyp, None
    if language in NO_SPACE_LANGUAGES:
        return ref, hyp, jiwer.process_characters(ref, hyp)
    return ref, hyp, jiwer.process_words(ref, hyp)


def clip_error_counts(language: str, reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words) of one clip, as ``error_rate_corpus`` counts them (see
    ``clip_alignment``): errors = substitutions + deletions + insertions of jiwer's alignment;
    characters instead of words for languages without spaces (jiwer's CER counts).

    Summed over clips, ``errors / words`` is ``error_rate_corpus`` of those clips. A reference
    that normalises to nothing gives (0, 0): the corpus WER leaves such a clip out, its
    insertions included.
    """
    _, _, out = clip_alignment(language, reference, hypothesis)
    if out is None:
        return 0, 0
    return (
        out.substitutions + out.deletions + out.insertions,
        out.hits + out.substitutions + out.deletions,
    )
