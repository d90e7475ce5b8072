"""A repetition guard for greedy decoding: stop a transcript that has started to loop.

Greedy Whisper decoders, small students above all, sometimes fall into a loop ("buenos días.
buenos días. buenos días. ...") and spend the whole token budget on it: the WER explodes with
insertions and decoding takes the full budget. OpenAI's Whisper meets this with a fallback on the
compression ratio (decode again at a higher temperature), which costs a second decode. The guard
here costs nothing: while decoding, a transcript whose tail is one unit of ``1..max_unit`` tokens
repeated ``min_repeats`` times or more, spanning ``min_tokens`` tokens or more, is ended at once
(``<|endoftext|>`` forced), and the repeats after the unit's first copy are cut from the output.

Thresholds are chosen so that speech does not trip them: "no, no, no" is 3 repeats of a 2-token
unit (6 tokens, under ``min_tokens``); a phrase said twice is 2 repeats. A looping transcript
trips them within ``min_tokens`` tokens of starting to loop.

The rule (:func:`loop_start`) and the cut (:meth:`LoopGuard.trim`) are pure functions of the
token ids; :meth:`LoopGuard.processor` wraps the rule as a transformers ``LogitsProcessor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor


def loop_start(
    tokens: Sequence[int], min_repeats: int, min_tokens: int, max_unit: int = 32
) -> int | None:
    """Where the repeats begin when ``tokens`` end in a loop, else None. Pure.

    A loop: the last ``u`` tokens (1 <= u <= max_unit) repeated back to back ``c`` times at the
    end, with ``c >= min_repeats`` and ``c * u >= min_tokens``. The smallest such unit wins; the
    answer is the index just after its first copy, so ``tokens[:answer]`` keeps one copy.
    ``min_repeats < 2`` turns the rule off.
    """
    if min_repeats < 2:
        return None
    seq = list(tokens)
    n = len(seq)
    for unit in range(1, min(max_unit, n // min_repeats) + 1):
        tail = seq[n - unit :]
        copies = 1
        while (copies + 1) * unit <= n and seq[n - (copies + 1) * unit : n - copies * unit] == tail:
            copies += 1
        if copies >= min_repeats and copies * unit >= min_tokens:
            return n - (copies - 1) * unit
    return None


@dataclass(frozen=True)
class LoopGuard:
    """The guard's thresholds (params.yaml ``decode``); ``min_repeats: 0`` turns it off."""

    min_repeats: int = 3
    min_tokens: int = 12
    max_unit: int = 32

    @property
    def enabled(self) -> bool:
        return self.min_repeats >= 2

    def start(self, tokens: Sequence[int]) -> int | None:
        return loop_start(tokens, self.min_repeats, self.min_tokens, self.max_unit)

    def trim(self, tokens: Sequence[int]) -> list[int]:
        """``tokens`` without the repeats of a final loop (one copy of the unit kept). Pure."""
        cut = self.start(tokens)
        return list(tokens[:cut] if cut is not None else tokens)

    def processors(self, model: Any) -> list[LogitsProcessor]:
        """``generate(logits_processor=...)`` for ``model``: the guard, or nothing when off."""
        if not self.enabled:
            return []
        eos = end_of_text(model)
        return [LoopProcessor(self, eos, eos)]

    def text_rows(
        self, sequences: torch.Tensor | Sequence[Sequence[int]], model: Any
    ) -> list[list[int]]:
        """Each row of ``generate``'s output as its transcript tokens: the special tokens
        (prompt, end of text, padding) dropped, a final loop's repeats cut. Pure but for
        reading ``model``'s end-of-text id."""
        first_special = end_of_text(model)
        rows = sequences.tolist() if isinstance(sequences, torch.Tensor) else sequences
        out = []
        for row in rows:
            text = [int(t) for t in row if int(t) < first_special]
            out.append(self.trim(text))  # a no-op when the guard is off
        return out


def end_of_text(model: Any) -> int:
    """``<|endoftext|>``'s id; in Whisper's vocabulary every special token comes at or after it."""
    eos = model.generation_config.eos_token_id
    return int(eos if isinstance(eos, int) else min(eos))


class LoopProcessor(LogitsProcessor):
    """Forces ``<|endoftext|>`` as the next token of every row whose transcript loops."""

    def __init__(self, guard: LoopGuard, eos_token_id: int, first_special: int) -> None:
        self.guard = guard
        self.eos = int(eos_token_id)
        self.first_special = int(first_special)
        self.stopped = 0  # rows ended by the guard, for reports

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < self.guard.min_tokens:
            return scores
        rows = []
        for i, row in enumerate(input_ids.tolist()):
            if row and row[-1] >= self.first_special:
                continue  # the prompt's last token, or a finished row
            text = transcript_tail(row, self.first_special)
            if self.guard.start(text) is not None:
                rows.append(i)
        if not rows:
            return scores
        self.stopped += len(rows)
        out = scores.clone()
        out[rows] = -float("inf")
        out[rows, self.eos] = 0.0
        return out  # type: ignore[return-value]


def transcript_tail(row: Sequence[int], first_special: int) -> list[int]:
    """The tokens after the last special token of ``row`` (the prompt). Pure."""
    for i in range(len(row) - 1, -1, -1):
        if row[i] >= first_special:
            return list(row[i + 1 :])
    return list(row)


DEFAULT_GUARD = LoopGuard()  # params.yaml's defaults: decode.loop_repeats 3, loop_min_tokens 12
NO_GUARD = LoopGuard(min_repeats=0)


def guard_of(cfg: Any) -> LoopGuard:
    """The guard of a ``decode`` config (``loop_repeats``, ``loop_min_tokens``)."""
    return LoopGuard(int(cfg.loop_repeats), int(cfg.loop_min_tokens))
