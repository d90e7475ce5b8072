"""Distillation losses: pure functions on logits, masked on padding.

Shapes: logits (B, T, V), the teacher's the same as the student's; labels (B, T) int64 with
``-100`` where there is no target; mask (B, T) bool, True on real tokens. Every loss is a scalar
averaged over the real tokens (0 when there are none), computed in float32 at least (float64
stays float64). Positions outside the mask change nothing, not even through NaN. Only the
student's logits receive gradients: the teacher's are detached. Teacher logits may hold
``-inf`` (suppressed tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE = -100  # label of positions without a target (padding, the forced prompt)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (natural log) of ``labels`` (B, T) under ``logits`` (B, T, V).

    Mean over the positions whose label is not -100.
    """
    _check_shapes(logits, labels=labels)
    mask = labels != IGNORE
    log_q = F.log_softmax(_wide(logits[mask]), dim=-1)  # (N, V), real tokens only
    nll = -log_q.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
    return _mean(nll)


def masked_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """T² · KL(p_teacher,T ‖ p_student,T): summed over the vocabulary, mean over masked-in tokens.

    Distil-Whisper's KD term: both distributions softened by temperature T, and T² keeps the
    gradient's scale independent of T (Hinton et al. 2015).
    """
    log_p, log_q = _log_probs(student_logits, teacher_logits, mask, temperature)
    kl = _kl_rows(log_p, log_q)
    return temperature**2 * _mean(kl)


def masked_js(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Jensen–Shannon divergence ½KL(p‖m) + ½KL(q‖m), m = (p + q)/2, mean over masked-in tokens.

    Natural log, so 0 ≤ JS ≤ ln 2; symmetric in student and teacher. Softened by temperature T
    but, unlike ``masked_kl``, not scaled by T² (equal at T = 1), so the bound holds.
    """
    log_p, log_q = _log_probs(student_logits, teacher_logits, mask, temperature)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    js = 0.5 * _kl_rows(log_p, log_m) + 0.5 * _kl_rows(log_q, log_m)
    return _mean(js)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    divergence: Literal["kl", "js"] = "kl",
) -> tuple[torch.Tensor, dict[str, float]]:
    """α·CE(labels) + β·divergence(teacher ‖ student) over the tokens whose label is not -100.

    Returns the total (for ``backward``) and its parts as floats:
    ``{"loss": total, "ce": CE, divergence: KL or JS}``.
    """
    if divergence not in ("kl", "js"):
        raise ValueError(f"divergence must be 'kl' or 'js', got {divergence!r}")
    mask = labels != IGNORE
    ce = masked_cross_entropy(student_logits, labels)
    div = (masked_kl if divergence == "kl" else masked_js)(
        student_logits, teacher_logits, mask, temperature
    )
    total = alpha * ce + beta * div
    parts = {
        "loss": float(total.detach()),
        "ce": float(ce.detach()),
        divergence: float(div.detach()),
    }
    return total, parts


def hidden_states_mse(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    pairs: Sequence[tuple[int, int]],
    mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over ``pairs`` (student index, teacher index) of the squared error between the two
    models' hidden states (each (B, T, d)) on the masked-in positions ((B, T) bool), averaged
    over positions and the model dimension. 0 (attached) when nothing is compared."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    total: torch.Tensor | None = None
    for s, t in pairs:
        a, b = student_hidden[s], teacher_hidden[t]
        if a.shape != b.shape or a.shape[:2] != mask.shape:
            raise ValueError(
                f"hidden states {tuple(a.shape)} (student {s}) and {tuple(b.shape)} (teacher "
                f"{t}) must match each other and the mask {tuple(mask.shape)}"
            )
        err = ((_wide(a) - _wide(b.detach())) ** 2)[mask].mean(-1)
        term = _mean(err)
        total = term if total is None else total + term
    if total is None:
        return torch.zeros((), dtype=torch.float32, device=mask.device)
    return total / len(pairs)


def _check_shapes(
    logits: torch.Tensor,
    other: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> None:
    if logits.ndim != 3:
        raise ValueError(f"logits must be (B, T, V), got {tuple(logits.shape)}")
    if other is not None and other.shape != logits.shape:
        raise ValueError(
            f"teacher logits {tuple(other.shape)} and student logits {tuple(logits.shape)} differ"
        )
    for name, t in (("labels", labels), ("mask", mask)):
        if t is not None and t.shape != logits.shape[:2]:
            raise ValueError(
                f"{name} must be (B, T) = {tuple(logits.shape[:2])}, got {tuple(t.shape)}"
            )
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")


def _log_probs(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probabilities at temperature T, (N, V) over masked-in tokens."""
    _check_shapes(student_logits, other=teacher_logits, mask=mask)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_p = F.log_softmax(_wide(teacher_logits.detach()[mask]) / temperature, dim=-1)
    log_q = F.log_softmax(_wide(student_logits[mask]) / temperature, dim=-1)
    return log_p, log_q


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 when it already is (half and bfloat16 logits are upcast)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) of each row, with 0·log 0 = 0 where p has zeros (``-inf`` log-probabilities)."""
    terms = log_p.exp() * (log_p - log_q)
    return torch.where(log_p > -math.inf, terms, 0.0).sum(-1)


def _mean(per_token: torch.Tensor) -> torch.Tensor:
    """Mean of a (N,) tensor; 0 (still attached to the graph) when N = 0."""
    return per_token.sum() / max(per_token.numel(), 1)


def gate_budget_loss(gates: list[torch.Tensor], mask: torch.Tensor, target: float) -> torch.Tensor:
    """|mean gate − target| over real positions of every layer (DistilWhisper's gate budget).

    ``gates``: one (B, T, 1) or (B, T) tensor a layer, all over the same positions; ``mask``
    (B, T) bool, True on real frames or tokens. The mean runs over layers and real positions
    together; 0 when there are no gates or no real positions.
    """
    if not gates:
        return mask.new_zeros((), dtype=torch.float32)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    total = mask.new_zeros((), dtype=torch.float32)
    for g in gates:
        g2 = g.squeeze(-1) if g.ndim == 3 else g
        if g2.shape != mask.shape:
            raise ValueError(f"gates {tuple(g2.shape)} and mask {tuple(mask.shape)} differ")
        total = total + _wide(g2[mask]).sum()
    count = int(mask.sum()) * len(gates)
    if count == 0:
        return total * 0.0
    return (total / count - target).abs()
