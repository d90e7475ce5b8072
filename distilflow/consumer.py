"""A registered model as consumers use it: load a model directory, transcribe numpy audio.

No MLflow here (``distilflow.registry.load_registered`` downloads, then calls
:meth:`RegisteredWhisper.from_dir`). Weights load with transformers from safetensors only; remote
code is never trusted and nothing is unpickled.

Extension point for per-language experts: a model directory may carry ``experts/<lang>.safetensors``
(DistilWhisper). Only when that folder exists, :func:`route_experts` is called before each
transcription with the requested language; see its docstring for what it must do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from distilflow.audio import CHUNK_SECONDS, SAMPLE_RATE, Decoded, to_mono_16k

EXPERTS_DIR = "experts"  # per-language expert files inside a model directory


def route_experts(model: Any, experts_dir: Path, language: str | None) -> None:
    """Route ``model`` to ``language``'s experts found in ``experts_dir``.

    Called by :meth:`RegisteredWhisper.transcribe` only when the model directory has an
    ``experts/`` folder: ``language``'s experts when ``experts_dir/<language>.safetensors``
    exists, else the shared path (the plain student), also when ``language`` is None.
    """
    from distilflow.experts import use_language

    use_language(model, experts_dir, language)


ExpertsRouter = Callable[[Any, Path, str | None], None]


@dataclass
class RegisteredWhisper:
    """A Whisper model and processor loaded from a registered model directory."""

    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    directory: Path
    experts_dir: Path | None = None
    router: ExpertsRouter = route_experts
    max_new_tokens: int = 128

    @classmethod
    def from_dir(cls, directory: Path | str) -> RegisteredWhisper:
        """Load a transformers Whisper directory (safetensors only, no remote code)."""
        directory = Path(directory)
        if not any(directory.glob("*.safetensors")):
            raise FileNotFoundError(f"{directory}: no safetensors weights (pickles are refused)")
        model = WhisperForConditionalGeneration.from_pretrained(
            str(directory), use_safetensors=True, local_files_only=True, trust_remote_code=False
        )
        processor = WhisperProcessor.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
        model.eval()  # type: ignore[no-untyped-call]
        experts = directory / EXPERTS_DIR
        return cls(model, processor, directory, experts if experts.is_dir() else None)

    def features(self, audio: np.ndarray, sampling_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Log-mel features of one clip (mono or (n, channels), any rate; at most 30 s)."""
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim not in (1, 2):
            raise ValueError(f"audio must be 1-D (or (n, channels)), got shape {samples.shape}")
        pcm = to_mono_16k(Decoded(samples, int(sampling_rate)))
        if pcm.size > CHUNK_SECONDS * SAMPLE_RATE:
            raise ValueError(
                f"audio is {pcm.size / SAMPLE_RATE:.1f} s; at most {CHUNK_SECONDS} s per call"
            )
        fe = self.processor.feature_extractor
        out: torch.Tensor = fe(pcm, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return out.to(self.model.device, self.model.dtype)

    @torch.no_grad()
    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None = None,
        sampling_rate: int = SAMPLE_RATE,
        max_new_tokens: int | None = None,
    ) -> str:
        """Greedy transcript of one clip; ``language`` (e.g. "fr") forced, None: detected."""
        if self.experts_dir is not None:
            self.router(self.model, self.experts_dir, language)
        ids = self.model.generate(
            self.features(audio, sampling_rate),
            language=language,
            task="transcribe",
            max_new_tokens=max_new_tokens or self.max_new_tokens,
        )
        tokenizer = self.processor.tokenizer
        text: str = tokenizer.batch_decode(ids, skip_special_tokens=True)[0]
        return text.strip()
