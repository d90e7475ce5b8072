"""The gate of a language's experts in training: the math only (pure functions).

At inference a token takes the expert path when the gate network's logit ``G`` is ``>= 0`` and
the shared path otherwise (a hard 0/1 gate). Training has two ways to get a gradient to ``G``:

- ``soft``: ``sigmoid(G + α·noise)`` (DistilWhisper), with α rising over training
  (``noise_alpha``) so that the gates end near 0/1 and the hard gate served matches training.
  Before that, a token trains a mix of the two paths that serving never runs.
- ``straight_through``: the forward pass uses the hard gate, exactly as served; the backward
  pass uses the gradient of ``sigmoid(G)`` (``straight_through``). Training and serving run the
  same network from the first step.

Expert dropout (``keep_mask``, ``apply_keep``) closes a layer's gate for a random share of the
training examples, each layer drawing its own: the other layers' experts then learn to work
where this one is off, as the served hard gate leaves some tokens on the shared path. (Dropping
an example's experts in every layer at once would give a frozen student no gradient from it.)
"""

from __future__ import annotations

from typing import Literal

import torch

GateMode = Literal["soft", "straight_through"]
GATE_MODES: tuple[GateMode, ...] = ("soft", "straight_through")


def hard_gate(logit: torch.Tensor) -> torch.Tensor:
    """The served gate: 1 where ``G >= 0``, else 0, in ``logit``'s dtype. Pure."""
    return (logit >= 0).to(logit.dtype)


def straight_through(logit: torch.Tensor) -> torch.Tensor:
    """Forward: exactly ``hard_gate(logit)``; backward: the gradient of ``sigmoid(logit)``. Pure.

    ``soft - soft.detach()`` is exactly 0 in the forward pass, so the sum is exactly the 0/1 gate
    (adding the hard gate first would round, e.g. ``1 + 0.3 - 0.3``).
    """
    soft = torch.sigmoid(logit)
    return (soft - soft.detach()) + hard_gate(logit)


def soft_gate(logit: torch.Tensor, alpha: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """``sigmoid(G + α·noise)``; ``noise`` defaults to a standard normal draw. Pure given noise."""
    if not alpha:
        return torch.sigmoid(logit)
    drawn = torch.randn_like(logit) if noise is None else noise
    return torch.sigmoid(logit + alpha * drawn)


def training_gate(logit: torch.Tensor, mode: GateMode, alpha: float) -> torch.Tensor:
    """The gate a training forward uses: ``straight_through`` (no noise) or ``soft``."""
    if mode == "straight_through":
        return straight_through(logit)
    if mode == "soft":
        return soft_gate(logit, alpha)
    raise ValueError(f"unknown gate mode {mode!r} ({' | '.join(GATE_MODES)})")


def noise_alpha(step: int, alpha: float, ramp_steps: int) -> float:
    """α of the soft gate's noise at ``step``: linear from 0 to ``alpha`` over ``ramp_steps``,
    then ``alpha`` (published: α = 5 reached at the end of the run). Pure."""
    if ramp_steps <= 0:
        return alpha
    return alpha * min(1.0, max(0, step) / ramp_steps)


def keep_mask(batch: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch,) bool: False for the examples whose expert path is dropped (probability ``p``)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"expert dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return torch.ones(batch, dtype=torch.bool)
    return torch.rand(batch, generator=generator) >= p


def apply_keep(gate: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``gate`` (B, ..., 1) with the dropped examples' gates at 0 (their shared path only). Pure.

    A ``keep`` of another batch size (a forward that is not the training batch's) changes nothing.
    """
    if keep is None or keep.shape[0] != gate.shape[0]:
        return gate
    shape = (gate.shape[0],) + (1,) * (gate.dim() - 1)
    return gate * keep.to(device=gate.device, dtype=gate.dtype).reshape(shape)
