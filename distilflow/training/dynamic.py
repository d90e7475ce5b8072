"""Training a dynamic-context student (see dynamic.py): its encoder states and its loss.

The teacher keeps Whisper's padded 30 s input (its states come from the encoder cache as for a
padded student). The student's encoder reads the first frames of the same log-mel, as many as
the longest clip of the batch needs (rounded up to ``context_multiple_s``). The loss is the
student's usual α·CE + β·T²·KL on the decoder outputs, plus ``encoder_mse`` times the MSE
between the student's and the teacher's encoder states on each clip's real positions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.config import StudentConfig
from distilflow.models.dynamic import context_frames, masked_mse, real_positions
from distilflow.training.loop import step_loss
from distilflow.training.teacher_logits import TeacherLogits

StatesFn = Callable[[list[str]], torch.Tensor]


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
    ) -> None:
        self.encoder, self.fe, self.paths = encoder, feature_extractor, paths
        self.multiple_s, self.device = multiple_s, device
        self.dtype = next(encoder.parameters()).dtype

    def features(self, hashes: list[str]) -> tuple[torch.Tensor, list[int]]:
        """(B, n_mels, frames) log-mel cut to the batch's context, and each clip's samples."""
        audio = [load_audio(self.paths[h]) for h in hashes]
        feats = self.fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        full = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        samples = [len(a) for a in audio]
        frames = context_frames(max(samples) / SAMPLE_RATE, self.multiple_s, int(full.shape[-1]))
        return full[..., :frames].to(self.device, self.dtype), samples

    def encode(self, hashes: list[str]) -> tuple[torch.Tensor, list[int]]:
        features, samples = self.features(hashes)
        states: torch.Tensor = self.encoder(features).last_hidden_state
        return states, [real_positions(n) for n in samples]

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
    ) -> None:
        self.cfg, self.teacher = cfg, teacher
        self.teacher_states, self.student_states = teacher_states, student_states
        self.teacher_logits = TeacherLogits(teacher, teacher_states, cfg.teacher_logits_mb)

    def __call__(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        hashes = batch["hash"]
        teacher_states = self.teacher_states(hashes)  # (B, 1500, d): the padded window
        student_states, positions = self.student_states.encode(hashes)
        loss, parts = step_loss(model, self.teacher_logits, batch, student_states, self.cfg)
        parts["context_frames"] = float(student_states.shape[1])
        if self.cfg.encoder_mse > 0:
            mse = masked_mse(student_states, teacher_states.detach(), positions)
            loss = loss + self.cfg.encoder_mse * mse
            parts["encoder_mse"] = float(mse.detach())
            parts["loss"] = float(loss.detach())
        return loss, parts
