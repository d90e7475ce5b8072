"""Audio of any length with segment times: transformers' sequential long-form decoding.

Whisper reads 30 s at a time. Cutting longer audio into back-to-back 30 s windows loses or
doubles the words a cut falls into, and gives no times. OpenAI's sequential algorithm, which
transformers' Whisper ``generate`` runs when its features are longer than 30 s, decodes a window
with timestamp tokens, then moves the window to the last complete segment's end, so no word is
cut; each segment carries its start and end. With it come OpenAI's safeguards: a window whose
transcript compresses too well (a loop) or whose mean log-probability is too low is decoded
again at the next temperature of a schedule (sampling), and a window the model judges silent
(no-speech probability above its threshold, with a low log-probability) is skipped.

A model that never learnt timestamp tokens cannot place the window's next start: the student
learns them on a share of its examples (``student.timestamp_share``, docs/student.md).

Sampling makes the fallback random; :func:`transcribe_segments` seeds it in a forked RNG, so the
same audio gives the same segments and the caller's random state is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessorList

from distilflow.audio import N_SAMPLES, SAMPLE_RATE
from distilflow.decoding.generate_args import token_budget
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard, end_of_text
from distilflow.decoding.subtitles import Segment


@dataclass(frozen=True)
class LongForm:
    """The long-form safeguards (params.yaml ``decode``; transformers' ``generate`` options).

    ``temperatures``: the fallback schedule, the first is tried first (``(0.0,)``: greedy, no
    fallback). ``compression_ratio_threshold``: transformers computes it on the tokens' bytes,
    for which its documentation advises 1.35 (OpenAI's 2.4 is on the text). ``None`` turns a
    threshold off.
    """

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 1.35
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_prev_tokens: bool = False
    seed: int = 0  # the fallback's sampling

    def generate_kwargs(self) -> dict[str, Any]:
        """``generate`` options of these safeguards. Pure."""
        temps = self.temperatures
        return {
            "temperature": temps[0] if len(temps) == 1 else tuple(temps),
            "compression_ratio_threshold": self.compression_ratio_threshold,
            "logprob_threshold": self.logprob_threshold,
            "no_speech_threshold": self.no_speech_threshold,
            "condition_on_prev_tokens": self.condition_on_prev_tokens,
        }


DEFAULT_LONGFORM = LongForm()


def longform_of(cfg: Any) -> LongForm:
    """The safeguards of a ``decode`` config (params.yaml names)."""
    return LongForm(
        temperatures=tuple(float(t) for t in cfg.temperatures),
        compression_ratio_threshold=_optional(cfg.compression_ratio_threshold),
        logprob_threshold=_optional(cfg.logprob_threshold),
        no_speech_threshold=_optional(cfg.no_speech_threshold),
        condition_on_prev_tokens=bool(cfg.condition_on_prev_tokens),
    )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def clamp_segments(segments: Sequence[Segment], duration_s: float) -> list[Segment]:
    """Segments with times inside ``[0, duration_s]`` and each end at or after its start. Pure.

    Whisper's last segment of padded audio can end past the audio (its timestamps count the
    padding); subtitles must not.
    """
    out = []
    for s in segments:
        start = min(max(0.0, s.start), duration_s)
        out.append(Segment(start, min(max(start, s.end), duration_s), s.text))
    return out


def _features(processor: Any, pcm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features and their frame mask: the 30 s window for short audio, every frame
    (unpadded, untruncated) for longer audio, which makes ``generate`` run long-form."""
    fe = processor.feature_extractor
    if pcm.size <= N_SAMPLES:
        out = fe(pcm, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
    else:
        out = fe(
            pcm,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
        )
    return out.input_features, out.attention_mask


@torch.no_grad()
def transcribe_segments(
    model: Any,
    processor: Any,
    pcm: np.ndarray,
    language: str | None,
    longform: LongForm = DEFAULT_LONGFORM,
    max_new_tokens: int = 128,
    guard: LoopGuard = DEFAULT_GUARD,
) -> list[Segment]:
    """Segments (seconds from the start, text) of 16 kHz mono ``pcm`` of any length.

    ``max_new_tokens`` bounds each window's decode; the repetition guard ends a window that
    loops (its repeats cut from the segment's text) as it does in short-form decoding.
    """
    features, mask = _features(processor, pcm)
    features = features.to(model.device, model.dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(longform.seed)
        out = model.generate(
            features,
            attention_mask=mask.to(model.device),
            language=language,
            task="transcribe",
            return_timestamps=True,
            return_segments=True,
            **longform.generate_kwargs(),
            **token_budget(max_new_tokens),
            logits_processor=LogitsProcessorList(guard.processors(model)),
        )
    eot = end_of_text(model)
    tokenizer = processor.tokenizer
    segments = []
    for seg in out["segments"][0]:
        tokens = guard.trim([int(t) for t in seg["tokens"].tolist() if int(t) < eot])
        text = str(tokenizer.decode(tokens, skip_special_tokens=True)).strip()
        segments.append(Segment(float(seg["start"]), float(seg["end"]), text))
    return clamp_segments(segments, pcm.size / SAMPLE_RATE)
