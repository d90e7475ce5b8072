"""The loss of one expert-training micro-batch (experts, and the fine-tuning/LoRA baselines).

    α·CE(pseudo-labels) + β·divergence(teacher ‖ student) + w·gate budget + λ·(CTC + L2S MSE)

The divergence is Jensen–Shannon by default (KL as an option), masked on padding; the gate
budget runs over real encoder frames (from each clip's duration) and real decoder tokens,
encoder and decoder separately; the text-alignment term (Distill-L2S) is optional.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from distilflow.audio import N_AUDIO_CTX, TOKENS_PER_SECOND
from distilflow.config import ExpertsConfig
from distilflow.models.experts import gate_values
from distilflow.training.losses import (
    IGNORE,
    gate_budget_loss,
    masked_cross_entropy,
    masked_js,
    masked_kl,
)
from distilflow.training.teacher_logits import TeacherLogits

StatesFn = Callable[[list[str]], torch.Tensor]


def encoder_frames(duration_s: float) -> int:
    """Encoder frames that hold the clip's audio (the rest of the 30 s window is padding). Pure."""
    return max(1, min(N_AUDIO_CTX, math.ceil(duration_s * TOKENS_PER_SECOND)))


def frame_mask(frames: list[int], total: int) -> torch.Tensor:
    """(B, total) bool, True on each clip's first ``frames[i]`` positions. Pure."""
    return torch.arange(total).unsqueeze(0) < torch.tensor(frames).unsqueeze(1)


class ExpertLoss:
    """Callable ``(model, batch) -> (loss, parts)`` for ``Trainer(loss_fn=...)``."""

    def __init__(
        self,
        cfg: ExpertsConfig,
        teacher: Any,
        teacher_states: StatesFn,
        student_states: StatesFn,
        frames: dict[str, int],
        alignment: Any | None = None,
    ) -> None:
        self.cfg, self.teacher = cfg, teacher
        self.teacher_states, self.student_states = teacher_states, student_states
        self.teacher_logits = TeacherLogits(teacher, teacher_states, cfg.teacher_logits_mb)
        self.frames = frames  # real encoder frames by clip hash
        self.alignment = alignment  # an l2s.L2SLoss when l2s_weight > 0

    def __call__(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, hashes = self.cfg, batch["hash"]
        inputs = {
            "decoder_input_ids": batch["decoder_input_ids"],
            "decoder_attention_mask": batch["decoder_attention_mask"],
        }
        s_states = self.student_states(hashes)
        enc_gates = gate_values(model, "encoder")  # of the student encoder's forward just run
        device = s_states.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            student_logits = model(encoder_outputs=(s_states,), **inputs).logits
        teacher_logits = self.teacher_logits(hashes, **inputs) if cfg.beta_kd > 0 else None
        labels = batch["labels"]
        mask = labels != IGNORE
        ce = masked_cross_entropy(student_logits, labels)
        total = cfg.alpha_ce * ce
        parts = {"ce": float(ce.detach())}
        if teacher_logits is not None:
            div_fn = masked_js if cfg.divergence == "js" else masked_kl
            div = div_fn(student_logits, teacher_logits, mask, cfg.temperature)
            total = total + cfg.beta_kd * div
            parts[cfg.divergence] = float(div.detach())
        budget = self.budget(model, enc_gates, batch, s_states.shape[1], device)
        if budget is not None:
            total = total + cfg.budget_weight * budget
            parts["gate_budget"] = float(budget.detach())
        if self.alignment is not None and cfg.l2s_weight > 0:
            l2s = self.alignment(s_states, batch, [self.frames[h] for h in hashes])
            total = total + cfg.l2s_weight * l2s
            parts["l2s"] = float(l2s.detach())
        parts["loss"] = float(total.detach())
        return total, parts

    def budget(
        self,
        model: Any,
        enc_gates: list[torch.Tensor],
        batch: dict[str, Any],
        enc_len: int,
        device: torch.device,
    ) -> torch.Tensor | None:
        """Budget of the encoder's gates (real frames) plus the decoder's (real tokens)."""
        dec_gates = gate_values(model, "decoder")
        if not dec_gates and not enc_gates:
            return None
        target = self.cfg.gate_target
        dec_mask = batch["decoder_attention_mask"].bool()
        loss = gate_budget_loss(dec_gates, dec_mask, target)
        if enc_gates:
            frames = [self.frames[h] for h in batch["hash"]]
            enc_mask = frame_mask(frames, enc_len).to(device)
            loss = loss + gate_budget_loss(enc_gates, enc_mask, target)
        return loss
