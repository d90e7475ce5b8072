"""Evaluation: greedy transcripts from (cached) encoder states, and WER/CER per language."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jiwer
import torch
from transformers import LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from distilflow.filter import NormalizerName, normalize
from distilflow.languages import NO_SPACE_LANGUAGES
from distilflow.loop_guard import DEFAULT_GUARD, LoopGuard


@dataclass(frozen=True)
class EvalClip:
    """One clip to transcribe and score."""

    hash: str
    language: str
    reference: str  # what the transcript is scored against


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


@torch.no_grad()
def transcribe_states(
    model: Any,
    processor: Any,
    states: torch.Tensor,
    language: str,
    max_new_tokens: int,
    guard: LoopGuard = DEFAULT_GUARD,
) -> list[str]:
    """Greedy transcripts of a batch of encoder states (B, frames, d) in one language."""
    out = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=states),
        language=language,
        task="transcribe",
        max_new_tokens=max_new_tokens,
        logits_processor=LogitsProcessorList(guard.processors(model)),
    )
    rows = guard.text_rows(out, model)
    return [t.strip() for t in processor.tokenizer.batch_decode(rows, skip_special_tokens=True)]


def evaluate_model(
    model: Any,
    processor: Any,
    clips: Sequence[EvalClip],
    states_of: Callable[[list[str]], torch.Tensor],
    max_new_tokens: int,
    batch_size: int = 8,
    guard: LoopGuard = DEFAULT_GUARD,
) -> tuple[dict[str, float], dict[str, str]]:
    """WER per language and the transcripts, decoding from the encoder states of each clip."""
    hyps: dict[str, str] = {}
    languages = sorted({c.language for c in clips})
    for lang in languages:
        group = [c for c in clips if c.language == lang]
        for i in range(0, len(group), batch_size):
            part = group[i : i + batch_size]
            states = states_of([c.hash for c in part])
            texts = transcribe_states(model, processor, states, lang, max_new_tokens, guard)
            hyps.update({c.hash: t for c, t in zip(part, texts, strict=True)})
    wer = {
        lang: error_rate_corpus(
            lang,
            [c.reference for c in clips if c.language == lang],
            [hyps[c.hash] for c in clips if c.language == lang],
        )
        for lang in languages
    }
    return wer, hyps


def macro_mean(values: dict[str, float]) -> float:
    """Mean over languages, ignoring languages without a score."""
    present = [v for v in values.values() if v == v]
    return sum(present) / len(present) if present else float("nan")
