"""The teacher's logits on training examples, kept in memory after their first computation.

Training samples each example many times (the demo's student sees each one about 16 times). The
teacher is frozen and teacher-forced on the example's fixed tokens, so its logits on an example
never change; computing them once takes the teacher's decoder (about a third of a training step
on CPU) out of every later step. Each example's rows are kept as fp16 after subtracting each
row's maximum: softmax is shift-invariant, and the tokens that hold the probability then sit
near 0, where fp16 is most precise. Rows are kept up to a memory budget; past it they are
computed every time (and rounded the same way, so a step's loss never depends on what fits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

StatesFn = Callable[[list[str]], torch.Tensor]
Key = tuple[str, tuple[int, ...]]  # clip hash, the example's decoder input tokens


def compact(logits: torch.Tensor) -> torch.Tensor:
    """(T, V) logits as fp16 with each row's maximum subtracted (same softmax at any T). Pure."""
    wide = logits.float()
    return (wide - wide.amax(-1, keepdim=True)).to(torch.float16)


class TeacherLogits:
    """Callable ``(hashes, decoder_input_ids, decoder_attention_mask) -> (B, T, V)`` logits.

    ``budget_mb`` 0 turns memoisation off: the teacher then runs on every batch, exactly as
    without this class. Padding positions of the result are 0 (the losses mask them).
    """

    def __init__(self, teacher: Any, states: StatesFn, budget_mb: float) -> None:
        if budget_mb < 0:
            raise ValueError(f"budget_mb {budget_mb} must be >= 0")
        self.teacher, self.states = teacher, states
        self.budget_bytes = int(budget_mb * 2**20)
        self.rows: dict[Key, torch.Tensor] = {}
        self.used_bytes = 0
        self.computed = 0  # examples the teacher ran on (a measure of what memoisation saved)

    def _forward(self, hashes: list[str], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            states = self.states(hashes)
        device = states.device
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            out = self.teacher(
                encoder_outputs=(states,),
                decoder_input_ids=ids.to(device),
                decoder_attention_mask=mask.to(device),
            )
        self.computed += len(hashes)
        logits: torch.Tensor = out.logits
        return logits

    def __call__(
        self,
        hashes: list[str],
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        if self.budget_bytes == 0:
            return self._forward(hashes, decoder_input_ids, decoder_attention_mask)
        lengths = [int(n) for n in decoder_attention_mask.sum(1).tolist()]
        keys: list[Key] = [
            (h, tuple(decoder_input_ids[i, :n].tolist()))
            for i, (h, n) in enumerate(zip(hashes, lengths, strict=True))
        ]
        rows: dict[int, torch.Tensor] = {}
        missing = [i for i, key in enumerate(keys) if key not in self.rows]
        if missing:
            fresh = self._forward(
                [hashes[i] for i in missing],
                decoder_input_ids[missing],
                decoder_attention_mask[missing],
            )
            for j, i in enumerate(missing):
                row = compact(fresh[j, : lengths[i]]).cpu()
                rows[i] = row
                size = row.numel() * row.element_size()
                if self.used_bytes + size <= self.budget_bytes:
                    self.rows[keys[i]] = row
                    self.used_bytes += size
        found = [rows[i] if i in rows else self.rows[key] for i, key in enumerate(keys)]
        device: torch.device = next(self.teacher.parameters()).device
        out = torch.zeros(
            (len(keys), decoder_input_ids.shape[1], found[0].shape[-1]), device=device
        )
        for i, row in enumerate(found):
            out[i, : lengths[i]] = row.to(device, torch.float32)
        return out
