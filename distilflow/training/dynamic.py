"""Training a dynamic-context student (see dynamic.py): its encoder states and its loss.

The teacher keeps Whisper's padded 30 s input (its states come from the encoder cache as for a
padded student). The student's encoder reads the first frames of the same log-mel, as many as
the longest clip of the batch needs plus ``context_margin_s`` (rounded up to
``context_multiple_s``). The loss is the student's usual α·CE + β·T²·KL on the decoder outputs,
plus ``encoder_mse`` times the MSE between the student's and the teacher's encoder states on
each clip's real positions and margin, plus ``decoder_mse`` times the MSE between the two
decoders' hidden states on the same tokens (the self-distillation of audio-context fine-tuning:
with the teacher's full decoder, the student is the teacher made to read short inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.config import StudentConfig
from distilflow.models.dynamic import (
    context_frames,
    context_samples,
    masked_mse,
    real_positions,
)
from distilflow.training.l2s import L2SLoss
from distilflow.training.loop import step_loss
from distilflow.training.losses import distillation_loss, hidden_states_mse
from distilflow.training.teacher_logits import TeacherLogits

StatesFn = Callable[[list[str]], torch.Tensor]


def decoder_state_pairs(layer_ids: Sequence[int], teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) indices into two decoders' ``hidden_states`` tuples that hold the same
    thing: after student layer k, the output of the teacher layer it was copied from; and the
    final (normed) outputs. The embeddings (index 0) are left out: frozen, they match. Pure."""
    layer_ids = list(layer_ids)
    n = len(layer_ids)
    if n < 1 or layer_ids != sorted(set(layer_ids)) or layer_ids[-1] >= teacher_layers:
        raise ValueError(f"layer_ids {layer_ids}: ascending layers below {teacher_layers}")
    inner = [(k + 1, int(layer_ids[k]) + 1) for k in range(n - 1)]
    return [*inner, (n, teacher_layers)]


def set_trainable_encoder(encoder: Any, top_layers: int) -> None:
    """Which parts of an encoder train: every parameter (``top_layers`` -1), or the top
    ``top_layers`` layers and every layer norm (0: the norms only). Positions are left to the
    caller."""
    if top_layers < 0:
        encoder.requires_grad_(True)
        return
    encoder.requires_grad_(False)
    for name, module in encoder.named_modules():
        if name.endswith("layer_norm"):
            module.requires_grad_(True)
    layers = list(encoder.layers)
    for layer in layers[len(layers) - top_layers :] if top_layers else []:
        layer.requires_grad_(True)


class DynamicStudentStates:
    """The dynamic student's encoder states of clips by hash (with gradients when it trains).

    Called with hashes, returns (B, T, d) states where T covers the batch's longest clip;
    :meth:`encode` also returns each clip's real encoder positions.
    """

    def __init__(
        self,
        encoder: Any,
        feature_extractor: Any,
        paths: dict[str, str],
        multiple_s: float,
        device: torch.device,
        margin_s: float = 0.0,
    ) -> None:
        self.encoder, self.fe, self.paths = encoder, feature_extractor, paths
        self.multiple_s, self.device, self.margin_s = multiple_s, device, margin_s
        self.dtype = next(encoder.parameters()).dtype

    def features(self, hashes: list[str]) -> tuple[torch.Tensor, list[int]]:
        """(B, n_mels, frames) log-mel cut to the batch's context, and each clip's samples."""
        audio = [load_audio(self.paths[h]) for h in hashes]
        samples = [len(a) for a in audio]
        feats = self.fe(
            audio,
            sampling_rate=SAMPLE_RATE,
            return_tensors="np",
            padding="max_length",  # just past the context: the 30 s window's first frames
            max_length=context_samples(samples, self.multiple_s, self.margin_s),
        ).input_features
        full = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        longest = max(samples) / SAMPLE_RATE
        frames = context_frames(longest, self.multiple_s, int(full.shape[-1]), self.margin_s)
        return full[..., :frames].to(self.device, self.dtype), samples

    def encode(self, hashes: list[str]) -> tuple[torch.Tensor, list[int]]:
        features, samples = self.features(hashes)
        states: torch.Tensor = self.encoder(features).last_hidden_state
        margin = round(self.margin_s * SAMPLE_RATE)  # the margin's positions are compared too
        return states, [real_positions(n + margin) for n in samples]

    def __call__(self, hashes: list[str]) -> torch.Tensor:
        return self.encode(hashes)[0]


class DynamicLoss:
    """``(model, batch) -> (loss, parts)`` for ``Trainer(loss_fn=...)``."""

    def __init__(
        self,
        cfg: StudentConfig,
        teacher: Any,
        teacher_states: StatesFn,
        student_states: DynamicStudentStates,
        layer_ids: Sequence[int] | None = None,
    ) -> None:
        """``layer_ids``: the teacher's decoder layers the student's were copied from (None:
        all of them, in order), which pairs the two decoders' hidden states."""
        self.cfg, self.teacher = cfg, teacher
        self.teacher_states, self.student_states = teacher_states, student_states
        self.teacher_logits = TeacherLogits(teacher, teacher_states, cfg.teacher_logits_mb)
        teacher_layers = int(teacher.config.decoder_layers)
        self.pairs = decoder_state_pairs(layer_ids or range(teacher_layers), teacher_layers)
        self.alignment: L2SLoss | None = None  # Distill-L2S (student.l2s_weight > 0)

    def set_step(self, step: int) -> None:
        """The trainer's hook before each step: the L2S CTC head's warm-up counts steps."""
        if self.alignment is not None:
            self.alignment.step = step

    def __call__(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        hashes = batch["hash"]
        teacher_states = self.teacher_states(hashes)  # (B, 1500, d): the padded window
        student_states, positions = self.student_states.encode(hashes)
        if self.cfg.decoder_mse > 0:
            loss, parts = self.self_distillation(model, batch, teacher_states, student_states)
        else:
            loss, parts = step_loss(model, self.teacher_logits, batch, student_states, self.cfg)
        parts["context_frames"] = float(student_states.shape[1])
        if self.cfg.encoder_mse > 0:
            mse = masked_mse(student_states, teacher_states.detach(), positions)
            loss = loss + self.cfg.encoder_mse * mse
            parts["encoder_mse"] = float(mse.detach())
        if self.alignment is not None and self.cfg.l2s_weight > 0:
            frames = [min(p, int(student_states.shape[1])) for p in positions]
            l2s = self.alignment(student_states, batch, frames)
            loss = loss + self.cfg.l2s_weight * l2s
            parts["l2s"] = float(l2s.detach())
        parts["loss"] = float(loss.detach())
        return loss, parts

    def self_distillation(
        self,
        model: Any,
        batch: dict[str, Any],
        teacher_states: torch.Tensor,
        student_states: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """α·CE + β·T²·KL on the logits and ``decoder_mse`` × the MSE of the decoders' hidden
        states, the teacher reading the padded window and the student its short context, both
        teacher-forced on the batch's tokens (the teacher runs each step: its hidden states are
        not memoised)."""
        inputs = {
            "decoder_input_ids": batch["decoder_input_ids"],
            "decoder_attention_mask": batch["decoder_attention_mask"],
            "output_hidden_states": True,
        }
        with torch.no_grad():
            ref = self.teacher(encoder_outputs=(teacher_states,), **inputs)
        out = model(encoder_outputs=(student_states,), **inputs)
        cfg = self.cfg
        loss, parts = distillation_loss(
            out.logits, ref.logits, batch["labels"], cfg.alpha_ce, cfg.beta_kd, cfg.temperature
        )
        mask = batch["decoder_attention_mask"].bool()
        mse = hidden_states_mse(
            out.decoder_hidden_states, ref.decoder_hidden_states, self.pairs, mask
        )
        loss = loss + cfg.decoder_mse * mse
        parts |= {"decoder_mse": float(mse.detach()), "loss": float(loss.detach())}
        return loss, parts
