"""What one method trains with: its own learning rate, and the experts' training gates.

Each method has its own learning rate option, so that the baselines run at their published
settings on the experts' data, step budget and loss (distillation term included):

- ``experts.lr``: the experts and gates (DistilWhisper's 1e-4);
- ``experts.finetune_lr``: the whole decoder (usual Whisper fine-tuning, 1e-5 to 2.5e-5);
- ``experts.lora_lr``: the LoRA adapters (DistilWhisper's LoRA baseline, 1e-4).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from distilflow.config import ExpertsConfig
from distilflow.models.experts import (
    set_expert_dropout,
    set_gate_mode,
    set_gate_noise,
    slots_of,
)
from distilflow.models.gates import noise_alpha


def method_lr(cfg: ExpertsConfig) -> float:
    """The learning rate of ``cfg.method``. Pure."""
    by_method = {"experts": cfg.lr, "finetune": cfg.finetune_lr, "lora": cfg.lora_lr}
    return by_method[cfg.method]


def loop_config(cfg: ExpertsConfig) -> ExpertsConfig:
    """``cfg`` as the training loop reads it: ``lr`` is the method's own. Pure."""
    return replace(cfg, lr=method_lr(cfg))


def noise_ramp_steps(cfg: ExpertsConfig) -> int:
    """Steps over which the soft gate's α rises to ``gate_noise`` (the whole run by default)."""
    return cfg.gate_noise_steps or cfg.max_steps


def gate_noise_at(cfg: ExpertsConfig, step: int) -> float:
    """α of the soft gate's noise at ``step`` (0 for the straight-through gate). Pure."""
    if cfg.gate != "soft":
        return 0.0
    return noise_alpha(step, cfg.gate_noise, noise_ramp_steps(cfg))


def set_training_gates(model: Any, cfg: ExpertsConfig) -> None:
    """The attached experts' gates as ``cfg`` trains them: the gate mode, expert dropout and
    the initial output bias of every gate (``gate_bias``; before training only)."""
    set_gate_mode(model, cfg.gate)
    set_expert_dropout(model, cfg.expert_dropout)
    set_gate_noise(model, gate_noise_at(cfg, 0))
    with torch.no_grad():
        for slot in slots_of(model).values():
            last = slot.gate[-1] if slot.gate is not None else None
            if isinstance(last, torch.nn.Linear):  # G's output layer
                last.bias.fill_(cfg.gate_bias)
