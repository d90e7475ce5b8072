"""Dev scores: greedy transcripts from (cached) encoder states, and WER/CER per language."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from distilflow.decoding.generate_args import every_state, token_budget
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.text import error_rate_corpus


@dataclass(frozen=True)
class EvalClip:
    """One clip to transcribe and score."""

    hash: str
    language: str
    reference: str  # what the transcript is scored against


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
        attention_mask=every_state(states),
        language=language,
        task="transcribe",
        **token_budget(max_new_tokens),
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
