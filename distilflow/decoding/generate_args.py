"""Arguments of Whisper's ``generate`` said the way it reads them without a warning."""

from __future__ import annotations

from typing import Any

import torch


def token_budget(max_new_tokens: int) -> dict[str, Any]:
    """Whisper ``generate`` options for at most ``max_new_tokens`` tokens after the prompt. Pure.

    Whisper's ``generate`` reads ``max_length`` (without ``max_new_tokens``) as a count after its
    forced prompt (start, language, task: transformers' ``_set_max_new_tokens_and_length`` adds
    the prompt's length), the budget ``max_new_tokens`` sets. ``max_new_tokens`` itself makes
    transformers warn on every call that ``max_length`` is set too, which Whisper's ``generate``
    always fills in before decoding.
    """
    return {"max_length": int(max_new_tokens)}


def every_state(states: torch.Tensor) -> torch.Tensor:
    """The attention mask of a batch of encoder states (B, frames, d): every frame. Given with
    ``encoder_outputs``, transformers need not warn that it cannot infer one for a batch."""
    return torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
