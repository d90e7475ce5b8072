"""Arguments of Whisper's ``generate`` (transformers' and CTranslate2's) said the way each reads
them."""

from __future__ import annotations

from typing import Any

import torch

MAX_POSITIONS = 448  # Whisper's decoder positions: prompt + generated tokens


def token_budget(max_new_tokens: int) -> dict[str, Any]:
    """Whisper ``generate`` options for at most ``max_new_tokens`` tokens after the prompt. Pure.

    Whisper's ``generate`` reads ``max_length`` (without ``max_new_tokens``) as a count after its
    forced prompt (start, language, task: transformers' ``_set_max_new_tokens_and_length`` adds
    the prompt's length), the budget ``max_new_tokens`` sets. ``max_new_tokens`` itself makes
    transformers warn on every call that ``max_length`` is set too, which Whisper's ``generate``
    always fills in before decoding.
    """
    return {"max_length": int(max_new_tokens)}


def ct2_max_length(prompt_length: int, max_new_tokens: int) -> int:
    """The ``max_length`` that lets ``ctranslate2.models.Whisper.generate`` decode up to
    ``max_new_tokens`` tokens after a prompt of ``prompt_length``. Pure.

    CTranslate2 4.x reads ``max_length`` as a total of Whisper's 448 positions and decodes at
    most ``min(max_length // 2, max_length - prompt_length)`` tokens (its whisper.cc keeps
    OpenAI's cap of half the context; faster-whisper passes 448, so up to 224 tokens): prompt +
    budget gives half the budget (measured: 66 tokens for 4 + 128). The budget is capped so
    that prompt and tokens fit in the 448 positions.
    """
    if not 0 < prompt_length < MAX_POSITIONS or max_new_tokens < 1:
        raise ValueError(f"a prompt of {prompt_length} tokens, {max_new_tokens} new: out of range")
    new = min(max_new_tokens, MAX_POSITIONS - prompt_length)
    return max(2 * new, prompt_length + new)


def every_state(states: torch.Tensor) -> torch.Tensor:
    """The attention mask of a batch of encoder states (B, frames, d): every frame. Given with
    ``encoder_outputs``, transformers need not warn that it cannot infer one for a batch."""
    return torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
