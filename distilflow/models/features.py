"""How a clip's log-mel is padded to Whisper's 30 s window: a property of each model.

Two conventions are in use. OpenAI's ``transcribe`` and faster-whisper compute the clip's
log-mel and pad it with zeros to 3000 frames (``log_mel``). transformers' feature extractor pads
the *audio* with silence and computes the log-mel of the whole window (``audio``): the frames
past the clip then hold the log-mel floor (the clip's loudest frame less 8), not zero. For
whisper-base neither transcribes better (docs/bench/padding.json: a tie on 240 clips), but a
model should be fed as it was trained and as the tools users run feed it: through our consumer
the teacher was 1.8 points from faster-whisper fed ``audio`` and 0.6 fed ``log_mel`` on the same
150 held-out asterisk clips (docs/dynamic.md).

Which one a model gets (:func:`padding_for`): a student records the one it was trained with in
its ``distilflow_student`` record (``feature_padding``); a model without a record (a hub or
registry Whisper) is fed as OpenAI feeds it (``log_mel``); a student record that predates the
choice was trained on ``audio``. Loaders install the matching extractor on the processor
(:func:`apply_feature_padding`), so every caller of ``processor.feature_extractor`` (labelling,
teacher states, training, evaluation, export checks, serving) feeds the model the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from transformers import WhisperFeatureExtractor

from distilflow.audio import HOP_LENGTH
from distilflow.models.dynamic import RECORD

FeaturePadding = Literal["audio", "log_mel"]
AUDIO: FeaturePadding = "audio"
LOG_MEL: FeaturePadding = "log_mel"
PADDINGS: tuple[FeaturePadding, ...] = (AUDIO, LOG_MEL)
FIELD = "feature_padding"  # in the student record


def clip_frames(samples: int, hop: int = HOP_LENGTH) -> int:
    """Log-mel frames that belong to a clip of ``samples``: OpenAI zeroes from here on. Pure."""
    return samples // hop


def zero_past_clips(features: Any, samples: Sequence[int], hop: int = HOP_LENGTH) -> None:
    """Set each clip's frames past its own length to zero, in place: ``features`` is a batch
    (B, n_mels, frames) of numpy or torch, or a list of (n_mels, frames) arrays."""
    if len(features) != len(samples):
        raise ValueError(f"{len(features)} feature rows for {len(samples)} clips")
    for row, n in zip(features, samples, strict=True):
        row[..., clip_frames(n, hop) :] = 0


def clip_samples(raw_speech: Any) -> list[int]:
    """Samples of each clip of a feature-extractor input (one clip or a batch), as
    transformers' extractor reads it: a 1-D array or list of floats is one clip."""
    if isinstance(raw_speech, np.ndarray):
        return [raw_speech.shape[-1]] * (raw_speech.shape[0] if raw_speech.ndim > 1 else 1)
    if isinstance(raw_speech, (list, tuple)) and raw_speech and _is_clip(raw_speech[0]):
        return [len(clip) for clip in raw_speech]
    return [len(raw_speech)]


def _is_clip(item: Any) -> bool:
    return isinstance(item, (np.ndarray, list, tuple)) or hasattr(item, "shape")


class LogMelPaddedExtractor(WhisperFeatureExtractor):
    """transformers' Whisper extractor whose frames past each clip are zeros (OpenAI's padding).

    Same options and output as the extractor it replaces; it saves as a plain
    ``WhisperFeatureExtractor``, so a saved processor loads anywhere (the model's record, not the
    processor, says which padding it wants).
    """

    def __call__(self, raw_speech: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().__call__(raw_speech, *args, **kwargs)
        zero_past_clips(out["input_features"], clip_samples(raw_speech), self.hop_length)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = super().to_dict()
        out["feature_extractor_type"] = WhisperFeatureExtractor.__name__
        return out


def padding_of(extractor: Any) -> FeaturePadding:
    """The padding a feature extractor applies."""
    return LOG_MEL if isinstance(extractor, LogMelPaddedExtractor) else AUDIO


def padding_for(model_or_config: Any) -> FeaturePadding:
    """The padding a model was trained with (see the module docstring)."""
    config = getattr(model_or_config, "config", model_or_config)
    record = getattr(config, RECORD, None)
    if not record:
        return LOG_MEL
    padding = record.get(FIELD) or AUDIO
    if padding not in PADDINGS:
        raise ValueError(f"unknown {FIELD} {padding!r} in the model's {RECORD} record")
    return padding


def with_padding(extractor: Any, padding: FeaturePadding) -> Any:
    """``extractor`` (a Whisper feature extractor) made to pad as ``padding`` says."""
    if padding not in PADDINGS:
        raise ValueError(f"feature padding {padding!r}: one of {', '.join(PADDINGS)}")
    if padding_of(extractor) == padding:
        return extractor
    cls = LogMelPaddedExtractor if padding == LOG_MEL else WhisperFeatureExtractor
    return cls.from_dict(extractor.to_dict())


def apply_feature_padding(model: Any, processor: Any) -> Any:
    """Install on ``processor`` the extractor that feeds ``model`` as it was trained."""
    processor.feature_extractor = with_padding(processor.feature_extractor, padding_for(model))
    return processor
