"""Dynamic audio context: a student whose encoder runs on the clip's own length, not 30 s.

Whisper pads every clip to a 30 s window (3000 log-mel frames, 1500 encoder positions) and its
encoder refuses anything else. A *dynamic-context* student reads only the first ``n`` frames of
the same padded log-mel (the teacher's front end, cut), where ``n`` is the clip's duration
rounded up to ``context_multiple_s``; its positional embeddings are the first ``n / 2`` rows of
the table. On a full 3000-frame input it computes exactly what the stock encoder computes.

How a model is made dynamic, and how that survives saving: the encoder module's class is
switched to :class:`DynamicWhisperEncoder` (a subclass with the same parameters, so the
safetensors are unchanged) and the kind is written into the student record of the config
(``distilflow_student.audio_context``, saved in ``config.json``). Loaders call
:func:`apply_audio_context` after ``from_pretrained``, which switches the class again when the
record says ``dynamic``: no remote code, no custom architecture name.

``generate`` pads ``input_features`` back to 3000 frames, so a dynamic model decodes from encoder
outputs computed here (:func:`generate_inputs`). The pure helpers (frame counts, length batches,
masked MSE) are at the top.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from distilflow.audio import (
    ENCODER_STRIDE,
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_AUDIO_CTX,
    N_FRAMES,
    N_SAMPLES,
    N_SAMPLES_PER_TOKEN,
    SAMPLE_RATE,
)

AudioContext = Literal["padded", "dynamic"]
PADDED: AudioContext = "padded"
DYNAMIC: AudioContext = "dynamic"
RECORD = "distilflow_student"  # the config attribute holding the student record (student.py)


# -- pure helpers ---------------------------------------------------------------------------
def frames_per_multiple(multiple_s: float) -> int:
    """Log-mel frames in one rounding step; the step must be a positive multiple of 20 ms. Pure."""
    frames = round(multiple_s * FRAMES_PER_SECOND)
    if frames < ENCODER_STRIDE or frames % ENCODER_STRIDE:
        raise ValueError(f"context_multiple_s {multiple_s}: must be a positive multiple of 0.02 s")
    if abs(frames - multiple_s * FRAMES_PER_SECOND) > 1e-6:
        raise ValueError(f"context_multiple_s {multiple_s}: must be a multiple of 0.02 s")
    return frames


def context_frames(
    duration_s: float, multiple_s: float, window: int = N_FRAMES, margin_s: float = 0.0
) -> int:
    """Log-mel frames the dynamic encoder reads for a clip of ``duration_s``. Pure.

    The duration plus ``margin_s`` (frames of the padded window past the speech: FUTO's
    audio-context fine-tuning keeps 32-64 encoder positions, 0.64-1.28 s, without which the
    decoder may not see the speech end) rounded up to a whole number of ``multiple_s`` steps
    (at least one), capped at the 30 s window. Always even (a whole number of encoder positions).
    """
    if not duration_s >= 0:
        raise ValueError(f"duration {duration_s} must be >= 0")
    if not margin_s >= 0:
        raise ValueError(f"context margin {margin_s} must be >= 0")
    step = frames_per_multiple(multiple_s)
    steps = max(1, math.ceil((duration_s + margin_s) * FRAMES_PER_SECOND / step - 1e-9))
    return min(steps * step, window)


def real_positions(n_samples: int, window_positions: int = N_AUDIO_CTX) -> int:
    """Encoder positions that hold the clip's audio (16 kHz samples; at least 1). Pure."""
    return max(1, min(window_positions, math.ceil(n_samples / N_SAMPLES_PER_TOKEN)))


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (length buckets). Pure.

    Indices are sorted by length (stable: equal lengths keep their order) and cut into batches
    of ``batch_size``; each batch is then decoded at the length of its longest member, so short
    clips never pay for a long one in another batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def masked_mse(
    student: torch.Tensor, teacher: torch.Tensor, positions: Sequence[int]
) -> torch.Tensor:
    """Mean squared error of encoder states on each clip's real positions only. Pure.

    ``student`` is (B, T, d), ``teacher`` (B, T', d) with T' >= T (the teacher's padded window);
    clip ``i`` is compared on its first ``min(positions[i], T)`` positions. The mean is over the
    compared positions and the model dimension.
    """
    if student.ndim != 3 or teacher.ndim != 3 or student.shape[0] != teacher.shape[0]:
        shapes = f"{tuple(student.shape)}, {tuple(teacher.shape)}"
        raise ValueError(f"states must be (B, T, d) with the same B: {shapes}")
    b, t, _ = student.shape
    if teacher.shape[1] < t or teacher.shape[2] != student.shape[2] or len(positions) != b:
        raise ValueError(
            f"teacher states {tuple(teacher.shape)} do not cover student states "
            f"{tuple(student.shape)} with {len(positions)} clip lengths"
        )
    mask = torch.arange(t, device=student.device).unsqueeze(0) < torch.tensor(
        [min(max(int(p), 0), t) for p in positions], device=student.device
    ).unsqueeze(1)
    diff = (student.float() - teacher[:, :t].to(student.device).float()) ** 2
    count = mask.sum() * student.shape[2]
    return (diff * mask.unsqueeze(-1)).sum() / count.clamp(min=1)


# -- the encoder ----------------------------------------------------------------------------
class DynamicWhisperEncoder(WhisperEncoder):  # type: ignore[no-untyped-call]
    """Whisper's encoder on any even number of log-mel frames up to the 30 s window.

    Same parameters as ``WhisperEncoder``; the positional embeddings are sliced to the input's
    length. A full-window input gives exactly the stock encoder's output.
    """

    def forward(
        self, input_features: torch.Tensor, attention_mask: Any = None, **kwargs: Any
    ) -> BaseModelOutput:
        del attention_mask  # Whisper does not mask its input
        stride = int(self.conv1.stride[0]) * int(self.conv2.stride[0])
        frames = int(input_features.shape[-1])
        window = int(self.config.max_source_positions) * stride
        if not 0 < frames <= window or frames % stride:
            raise ValueError(
                f"a dynamic-context encoder reads 1..{window} log-mel frames, a multiple of "
                f"{stride}; got {frames}"
            )
        embeds = nn.functional.gelu(self.conv1(input_features))
        embeds = nn.functional.gelu(self.conv2(embeds)).permute(0, 2, 1)
        hidden = embeds + self.embed_positions.weight[: embeds.shape[1]]
        hidden = nn.functional.dropout(hidden, p=self.dropout, training=self.training)
        for layer in self.layers:
            if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                continue
            hidden = layer(hidden, None)
        return BaseModelOutput(last_hidden_state=self.layer_norm(hidden))


# -- the kind of a model --------------------------------------------------------------------
def audio_context_of(model_or_config: Any) -> tuple[AudioContext, float | None]:
    """(kind, rounding step in seconds) from the student record; ``padded`` when unrecorded."""
    config = getattr(model_or_config, "config", model_or_config)
    record = getattr(config, RECORD, None) or {}
    kind = record.get("audio_context") or PADDED
    if kind not in (PADDED, DYNAMIC):
        raise ValueError(f"unknown audio_context {kind!r} in the model's {RECORD} record")
    multiple = record.get("context_multiple_s")
    return kind, (float(multiple) if multiple is not None else None)


def audio_context_of_dir(model_dir: Path | str) -> tuple[AudioContext, float | None]:
    """(kind, rounding step) of a saved model, from its ``config.json`` alone (nothing loaded)."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return audio_context_of(SimpleNamespace(**{RECORD: config.get(RECORD)}))


def context_margin_of(model_or_config: Any) -> float:
    """Seconds of the padded window a dynamic model reads past the clip (0 when unrecorded:
    models trained before the margin existed)."""
    config = getattr(model_or_config, "config", model_or_config)
    record = getattr(config, RECORD, None) or {}
    return float(record.get("context_margin_s") or 0.0)


def context_margin_of_dir(model_dir: Path | str) -> float:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return context_margin_of(SimpleNamespace(**{RECORD: config.get(RECORD)}))


def describe_audio_context(kind: str, multiple_s: float | None, margin_s: float = 0.0) -> str:
    """One line for model cards and reports."""
    if kind == DYNAMIC:
        margin = f" plus {margin_s:g} s of margin" if margin_s else ""
        return (
            f"dynamic (the encoder reads the clip's own length{margin}, rounded up to "
            f"{multiple_s:g} s, not a padded 30 s window)"
        )
    return "padded (Whisper's 30 s window)"


def is_dynamic(model: Any) -> bool:
    return audio_context_of(model)[0] == DYNAMIC


def set_audio_context(
    model: Any, kind: AudioContext, multiple_s: float | None = None, margin_s: float = 0.0
) -> Any:
    """Record ``kind`` (and, dynamic, its rounding step and margin) on the model's config and
    make its encoder match; returns the model."""
    if kind == DYNAMIC:
        if multiple_s is None:
            raise ValueError("a dynamic-context student needs context_multiple_s")
        frames_per_multiple(multiple_s)  # validates
        if not margin_s >= 0:
            raise ValueError(f"context margin {margin_s} must be >= 0")
    record = dict(getattr(model.config, RECORD, None) or {})
    record["audio_context"] = kind
    record["context_multiple_s"] = float(multiple_s) if kind == DYNAMIC and multiple_s else None
    record["context_margin_s"] = float(margin_s) if kind == DYNAMIC else None
    setattr(model.config, RECORD, record)
    return apply_audio_context(model)


def apply_audio_context(model: Any) -> Any:
    """After loading: give a model recorded as dynamic its dynamic encoder. Returns the model."""
    encoder = model.get_encoder()
    kind: type = type(encoder)
    if kind not in (WhisperEncoder, DynamicWhisperEncoder):
        if not is_dynamic(model):
            return model  # some other padded encoder: left alone
        raise TypeError(f"cannot make a {kind.__name__} dynamic")
    # same parameters and buffers: only the forward differs, so the class can be switched
    encoder.__class__ = DynamicWhisperEncoder if is_dynamic(model) else WhisperEncoder
    return model


# -- inference ------------------------------------------------------------------------------
def fit_features(model: Any, features: torch.Tensor, n_samples: Sequence[int]) -> torch.Tensor:
    """The log-mel a model reads: unchanged for a padded model, cut for a dynamic one.

    ``features`` (B, n_mels, 3000) of clips with ``n_samples`` 16 kHz samples each; a dynamic
    model reads the frames of the longest plus its margin, rounded up to its
    ``context_multiple_s``.
    """
    kind, multiple = audio_context_of(model)
    if kind == PADDED:
        return features
    longest = max(n_samples) / SAMPLE_RATE
    margin = context_margin_of(model)
    frames = context_frames(longest, multiple or 1.0, int(features.shape[-1]), margin)
    return features[..., :frames]


FRONT_END_SLACK = 4  # log-mel frames computed past the context: the STFT's last frames see the
# reflect padding at the audio's end (n_fft / 2 = 200 samples, under 2 frames), so frames this
# far before the end equal those of the 30 s window


def padded_samples(model: Any, n_samples: Sequence[int]) -> int:
    """Samples to pad a batch's audio to before the log-mel: the 30 s window for a padded
    model; for a dynamic one just past its context, which gives the same first frames as the
    30 s window for about a fifth of the front end's time on a 3 s clip."""
    kind, multiple = audio_context_of(model)
    if kind == PADDED:
        return N_SAMPLES
    return context_samples(n_samples, multiple or 1.0, context_margin_of(model))


def context_samples(n_samples: Sequence[int], multiple_s: float, margin_s: float) -> int:
    """Samples a dynamic context's front end needs for clips of ``n_samples``: its frames plus
    ``FRONT_END_SLACK``, at most the 30 s window. Pure."""
    frames = context_frames(max(n_samples) / SAMPLE_RATE, multiple_s, N_FRAMES, margin_s)
    return min(N_SAMPLES, (frames + FRONT_END_SLACK) * HOP_LENGTH)


def generate_inputs(model: Any, features: torch.Tensor) -> dict[str, Any]:
    """``generate`` keyword arguments for ``features``: ``input_features`` for a full window,
    else the encoder's outputs (``generate`` would pad short features back to 30 s)."""
    if int(features.shape[-1]) == N_FRAMES or not is_dynamic(model):
        return {"input_features": features}
    states = model.get_encoder()(features).last_hidden_state
    return {"encoder_outputs": BaseModelOutput(last_hidden_state=states)}
