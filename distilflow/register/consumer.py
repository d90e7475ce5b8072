"""A registered model as consumers use it: load a model directory, transcribe numpy audio.

No MLflow here (``distilflow.register.download.load_registered`` downloads, then calls
:meth:`RegisteredWhisper.from_dir`). A model directory decodes as its ``distilflow_decode.json``
says (the evaluation's token budget, repetition guard and long-form safeguards, written at
registration; see :mod:`distilflow.register.decode_file`), else with the defaults. Audio up to
30 s is decoded greedily in batches, as the evaluation scored it; longer audio, and any audio
whose segment times are asked for (:meth:`RegisteredWhisper.segments`), with transformers'
sequential long-form decoding (:mod:`distilflow.decoding.longform`). Weights load with transformers
from safetensors only; remote code is never trusted and nothing is unpickled.

Extension point for per-language experts: a model directory may carry ``experts/<lang>.safetensors``
(DistilWhisper). Only when that folder exists, :func:`route_experts` is called before each
transcription with the requested language; see its docstring for what it must do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import LogitsProcessorList, WhisperForConditionalGeneration, WhisperProcessor

from distilflow.audio import N_SAMPLES, SAMPLE_RATE, Decoded, to_mono_16k
from distilflow.decoding.ct2 import Ct2Whisper
from distilflow.decoding.generate_args import token_budget
from distilflow.decoding.longform import DEFAULT_LONGFORM, LongForm, transcribe_segments
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.decoding.subtitles import Segment, to_txt
from distilflow.models.dynamic import (
    apply_audio_context,
    fit_features,
    generate_inputs,
    length_batches,
    padded_samples,
)
from distilflow.models.features import apply_feature_padding
from distilflow.register.decode_file import DEFAULT_MAX_NEW_TOKENS, read_decode

EXPERTS_DIR = "experts"  # per-language expert files inside a model directory
Backend = Literal["transformers", "ctranslate2"]


def ct2_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """Where serving conversions are kept: ``cache_dir``, else ``$DISTILFLOW_CACHE/ct2`` or
    ``~/.cache/distilflow/ct2``."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("DISTILFLOW_CACHE") or Path.home() / ".cache" / "distilflow"
    return Path(base) / "ct2"


def serving_export(directory: Path, cache_dir: Path | str | None = None) -> Path:
    """A CTranslate2 int8 conversion of the model in ``directory``, made once and kept under
    :func:`ct2_cache_dir` by the fingerprint of its weights; its ``distilflow_export.json``
    records the audio context."""
    from distilflow.export.convert import export_ct2
    from distilflow.models.load import transformers_dir_fingerprint

    target = ct2_cache_dir(cache_dir) / f"{transformers_dir_fingerprint(directory)}-int8"
    if not (target / "model.bin").is_file():
        export_ct2(directory, target, "int8")
    return target


def language_export(
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    directory: Path,
    experts_file: Path,
    cache_dir: Path | str | None = None,
) -> Path:
    """A CTranslate2 int8 conversion of ``model`` with one language's experts merged into plain
    feed-forward weights (as ``distilflow export --language``), made once and kept by the
    fingerprints of the weights and of the experts file. ``model`` must already be routed to
    that language (:func:`route_experts`); it is not changed."""
    from distilflow.export.convert import export_ct2
    from distilflow.models.experts import merge_language
    from distilflow.models.load import file_sha256, transformers_dir_fingerprint

    language = experts_file.stem
    key = f"{transformers_dir_fingerprint(directory)}-{language}-{file_sha256(experts_file)[:16]}"
    target = ct2_cache_dir(cache_dir) / f"{key}-int8"
    if not (target / "model.bin").is_file():
        merged = merge_language(model)
        export_ct2(None, target, "int8", model=(merged, processor), language=language)
    return target


def route_experts(model: Any, experts_dir: Path, language: str | None) -> None:
    """Route ``model`` to ``language``'s experts found in ``experts_dir``.

    Called by :meth:`RegisteredWhisper.transcribe` only when the model directory has an
    ``experts/`` folder: ``language``'s experts when ``experts_dir/<language>.safetensors``
    exists, else the shared path (the plain student), also when ``language`` is None.
    """
    from distilflow.models.experts import use_language

    use_language(model, experts_dir, language)


ExpertsRouter = Callable[[Any, Path, str | None], None]


def every_frame(features: torch.Tensor) -> torch.Tensor:
    """The attention mask of a batch of features: every frame (Whisper's encoder reads them all,
    it takes no mask). Given, transformers need not warn that it cannot infer one for a batch."""
    batch, frames = features.shape[0], features.shape[-1]
    return torch.ones(batch, frames, dtype=torch.long, device=features.device)


@dataclass
class RegisteredWhisper:
    """A Whisper model and processor loaded from a registered model directory."""

    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    directory: Path
    experts_dir: Path | None = None
    router: ExpertsRouter = route_experts
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    guard: LoopGuard = DEFAULT_GUARD  # a transcript that starts to loop is ended, repeats cut
    longform: LongForm = DEFAULT_LONGFORM  # audio over 30 s: fallback and thresholds
    ct2: Ct2Whisper | None = None  # backend ctranslate2: clips up to 30 s decode through it
    ct2_threads: int = 0  # CTranslate2's CPU threads (0: its default)
    # backend ctranslate2 with experts: each language's conversion, experts merged
    ct2_languages: dict[str, Ct2Whisper] = field(default_factory=dict)

    @classmethod
    def from_dir(
        cls,
        directory: Path | str,
        max_new_tokens: int | None = None,
        guard: LoopGuard | None = None,
        backend: Backend = "transformers",
        threads: int = 0,
    ) -> RegisteredWhisper:
        """Load a transformers Whisper directory (safetensors only, no remote code).

        It decodes with the token budget and repetition guard of its ``distilflow_decode.json``
        (the evaluation's, written at registration), or the defaults without one;
        ``max_new_tokens`` and ``guard`` given here win. ``backend`` ``ctranslate2``: clips up
        to 30 s decode through a CTranslate2 int8 conversion of the weights (made once, cached
        by their fingerprint: :func:`serving_export`), a dynamic-context model on the clip's own
        length plus its margin; longer audio stays with transformers' long-form decoding. A
        model with per-language experts decodes a language that has experts through its own
        conversion, the experts merged into the feed-forward weights (:func:`language_export`:
        exact where the language's gates are open, as the export stage verifies).
        ``threads``: CTranslate2's CPU threads (0: its default).
        """
        directory = Path(directory)
        recorded = read_decode(directory)
        if not any(directory.glob("*.safetensors")):
            raise FileNotFoundError(f"{directory}: no safetensors weights (pickles are refused)")
        model = WhisperForConditionalGeneration.from_pretrained(
            str(directory), use_safetensors=True, local_files_only=True, trust_remote_code=False
        )
        processor = WhisperProcessor.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
        apply_audio_context(model)  # a dynamic-context student: its encoder reads the clip only
        apply_feature_padding(model, processor)  # its log-mel padded as it was trained
        model.eval()  # type: ignore[no-untyped-call]
        experts = directory / EXPERTS_DIR
        ct2 = None
        if backend == "ctranslate2":  # experts: a conversion a language, made when first asked
            ct2 = Ct2Whisper(serving_export(directory), model.generation_config, threads)
        elif backend != "transformers":
            raise ValueError(f"backend {backend!r}: transformers or ctranslate2")
        return cls(
            model,
            processor,
            directory,
            experts if experts.is_dir() else None,
            max_new_tokens=recorded.max_new_tokens if max_new_tokens is None else max_new_tokens,
            guard=recorded.guard if guard is None else guard,
            longform=recorded.longform,
            ct2=ct2,
            ct2_threads=threads,
        )

    def ct2_for(self, language: str | None) -> Ct2Whisper | None:
        """The CTranslate2 model that serves ``language``: its own conversion with its experts
        merged where the model directory has experts for it, else the plain one (None: backend
        transformers)."""
        if self.ct2 is None or self.experts_dir is None or language is None:
            return self.ct2
        from distilflow.models.experts import expert_file

        experts_file = expert_file(self.experts_dir, language)
        if not experts_file.is_file():
            return self.ct2
        if language not in self.ct2_languages:
            route_experts(self.model, self.experts_dir, language)
            ct2_dir = language_export(self.model, self.processor, self.directory, experts_file)
            gen = self.model.generation_config
            self.ct2_languages[language] = Ct2Whisper(ct2_dir, gen, self.ct2_threads)
        return self.ct2_languages[language]

    def pcm(self, audio: np.ndarray, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
        """16 kHz mono float32 samples of ``audio`` (mono or (n, channels), any rate)."""
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim not in (1, 2):
            raise ValueError(f"audio must be 1-D (or (n, channels)), got shape {samples.shape}")
        return to_mono_16k(Decoded(samples, int(sampling_rate)))

    def features(self, audio: np.ndarray, sampling_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Log-mel features of one clip of at most 30 s (what ``transcribe`` feeds the model)."""
        pcm = self.pcm(audio, sampling_rate)
        if pcm.size > N_SAMPLES:
            raise ValueError(f"audio is {pcm.size / SAMPLE_RATE:.1f} s; at most 30 s a window")
        return self.batch_features([pcm])

    def batch_features(self, pcms: list[np.ndarray]) -> torch.Tensor:
        """Log-mel features of 16 kHz windows of at most 30 s: Whisper's padded window, cut to
        the longest window's length (rounded up) for a dynamic-context student."""
        fe = self.processor.feature_extractor
        lengths = [p.size for p in pcms]
        out: torch.Tensor = fe(
            pcms,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            padding="max_length",
            max_length=padded_samples(self.model, lengths),  # a dynamic model: its context
        ).input_features
        out = fit_features(self.model, out, lengths)
        return out.to(self.model.device, self.model.dtype)

    @torch.no_grad()
    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None = None,
        sampling_rate: int = SAMPLE_RATE,
        max_new_tokens: int | None = None,
    ) -> str:
        """Transcript of one clip; ``language`` (e.g. "fr") forced, None: detected.

        Up to 30 s: greedy, as the evaluation scored it. Longer: sequential long-form decoding
        (:meth:`segments`), the segments' texts joined with a space.
        """
        return self.transcribe_many([audio], language, sampling_rate, max_new_tokens)[0]

    @torch.no_grad()
    def transcribe_many(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        sampling_rate: int = SAMPLE_RATE,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
    ) -> list[str]:
        """Transcripts of several clips in one language: clips up to 30 s greedily, batched by
        length buckets (a dynamic-context student then reads only as many frames as the longest
        of them); longer clips one at a time with long-form decoding (:meth:`segments`).
        """
        ct2 = self.ct2_for(language)  # a conversion with experts routes the model: route after
        if self.experts_dir is not None:
            self.router(self.model, self.experts_dir, language)
        pcms = [self.pcm(a, sampling_rate) for a in audios]
        texts = [""] * len(pcms)
        short = [i for i, p in enumerate(pcms) if p.size <= N_SAMPLES]
        budget = max_new_tokens or self.max_new_tokens
        for i in (i for i, p in enumerate(pcms) if p.size > N_SAMPLES):
            texts[i] = to_txt(self._segments(pcms[i], language, budget)).strip()
        tokenizer = self.processor.tokenizer
        for batch in length_batches([pcms[i].size for i in short], batch_size):
            idx = [short[j] for j in batch]
            features = self.batch_features([pcms[i] for i in idx])
            if ct2 is not None:  # the guard on the finished tokens (see decoding/ct2.py)
                tokens = ct2.generate(features, language, budget)
                rows = [self.guard.trim(t) for t in tokens]
            else:
                ids = self.model.generate(
                    **generate_inputs(self.model, features),
                    attention_mask=every_frame(features),
                    language=language,
                    task="transcribe",
                    **token_budget(budget),
                    logits_processor=LogitsProcessorList(self.guard.processors(self.model)),
                )
                rows = self.guard.text_rows(ids, self.model)
            decoded = tokenizer.batch_decode(rows, skip_special_tokens=True)
            for i, text in zip(idx, decoded, strict=True):
                texts[i] = str(text).strip()
        return texts

    @torch.no_grad()
    def segments(
        self,
        audio: np.ndarray,
        language: str | None = None,
        sampling_rate: int = SAMPLE_RATE,
        max_new_tokens: int | None = None,
    ) -> list[Segment]:
        """Segments of one clip of any length with their times (seconds from the start), by
        transformers' sequential long-form decoding with the model's long-form safeguards.

        For subtitles (:func:`distilflow.decoding.subtitles.render`). The model must have
        learnt timestamp tokens (the teacher has; a student on ``student.timestamp_share``).
        """
        if self.experts_dir is not None:
            self.router(self.model, self.experts_dir, language)
        pcm = self.pcm(audio, sampling_rate)
        return self._segments(pcm, language, max_new_tokens or self.max_new_tokens)

    def _segments(self, pcm: np.ndarray, language: str | None, budget: int) -> list[Segment]:
        return transcribe_segments(
            self.model, self.processor, pcm, language, self.longform, budget, self.guard
        )
