"""Pseudo-labelling: the teacher transcribes clips in length-sorted, language-grouped batches.

Per clip it records the text, the content token ids, the average log-probability, the
compression ratio and the no-speech probability, with the teacher's fingerprint and the hash of
the generation settings (see :mod:`distilflow.label.cache`). The language is forced from the
manifest, or detected from the first decoding step and recorded when the manifest has none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import torch
from transformers.modeling_outputs import BaseModelOutput

from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.decoding.generate_args import every_state, token_budget
from distilflow.label.cache import LabelCache, LabelRecord
from distilflow.models.encoder_cache import EncoderCache
from distilflow.models.features import LOG_MEL, padding_of
from distilflow.text import compression_ratio

NO_SPEECH_TOKENS = ("<|nospeech|>", "<|nocaptions|>")  # large-v3 name, then v1/v2 name


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that changes what the teacher outputs (part of the cache key)."""

    backend: str  # transformers | ctranslate2
    max_new_tokens: int
    num_beams: int
    timestamps: bool
    task: str = "transcribe"
    feature_padding: str = LOG_MEL  # how the log-mel past a clip is padded (models/features.py)

    def hash(self) -> str:
        key: dict[str, object] = asdict(self)
        if self.backend == "ctranslate2":  # its labels of before 2026-12-05 decoded half of
            key["ct2_budget"] = "whole"  # max_new_tokens (decoding/generate_args.py): relabel
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Clip:
    """One clip to label."""

    hash: str
    audio_path: str
    language: str | None  # None: detect it
    duration_s: float


class Labeller(Protocol):
    """A teacher backend: labels a batch of clips that share a language (or all need one)."""

    teacher_id: str
    settings: GenerationSettings

    def label(self, clips: Sequence[Clip]) -> list[LabelRecord]: ...


def with_padding_of(settings: GenerationSettings, processor: Any) -> GenerationSettings:
    """``settings`` naming the feature padding ``processor`` applies (a label cache key)."""
    return replace(settings, feature_padding=padding_of(processor.feature_extractor))


def batches(clips: Sequence[Clip], batch_size: int) -> Iterator[list[Clip]]:
    """Group by language (undetermined last), sort by duration, cut into batches. Pure."""
    ordered = sorted(
        clips, key=lambda c: (c.language is None, c.language or "", c.duration_s, c.hash)
    )
    batch: list[Clip] = []
    for clip in ordered:
        if batch and (len(batch) == batch_size or batch[-1].language != clip.language):
            yield batch
            batch = []
        batch.append(clip)
    if batch:
        yield batch


def avg_logprobs(
    step_logits: Sequence[torch.Tensor], tokens: torch.Tensor, eos: int
) -> list[float]:
    """Mean log-probability of the generated tokens up to and including the first end token."""
    logp = torch.stack([s.float().log_softmax(-1) for s in step_logits], dim=1)  # (B, T, V)
    chosen = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    is_eos = (tokens == eos).int()
    after_first_eos = (is_eos.cumsum(1) - is_eos) > 0
    mask = ~after_first_eos
    # after the end the scores may be -inf (timestamp rules): left out, never multiplied by 0
    kept = torch.where(mask, chosen, torch.zeros_like(chosen))
    return (kept.sum(1) / mask.sum(1).clamp(min=1)).tolist()


class TransformersLabeller:
    """Teacher backend on a transformers ``WhisperForConditionalGeneration``.

    With an ``encoder_cache`` (keyed by this teacher's encoder weights) the encoder states it
    computes to label a clip are stored there too, so the student stage, whose frozen encoder is
    the same, reads them instead of running the encoder a second time.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        teacher_id: str,
        settings: GenerationSettings,
        device: torch.device,
        encoder_cache: EncoderCache | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.teacher_id = teacher_id
        self.settings = with_padding_of(settings, processor)
        self.device = device
        self.encoder_cache = encoder_cache
        tok = processor.tokenizer
        vocab = tok.get_vocab()
        gen = model.generation_config
        self.sot = int(gen.decoder_start_token_id)
        self.eos = int(
            gen.eos_token_id if isinstance(gen.eos_token_id, int) else gen.eos_token_id[0]
        )
        self.no_speech = next((vocab[t] for t in NO_SPEECH_TOKENS if t in vocab), None)
        self.lang_ids = {tok_str[2:-2]: int(i) for tok_str, i in gen.lang_to_id.items()}
        self.timestamp_begin = int(gen.no_timestamps_token_id) + 1

    def _features(self, clips: Sequence[Clip]) -> torch.Tensor:
        audio = [load_audio(c.audio_path) for c in clips]
        feats = self.processor.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        )
        features: torch.Tensor = feats.input_features.to(self.device, self.model.dtype)
        return features

    def _first_step(self, enc: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the first token after <|startoftranscript|> (B, V)."""
        start = torch.full((enc.shape[0], 1), self.sot, device=self.device)
        out = self.model(encoder_outputs=(enc,), decoder_input_ids=start)
        logp: torch.Tensor = out.logits[:, 0].float().log_softmax(-1)
        return logp

    def _content(self, ids: list[int]) -> list[int]:
        keep_ts = self.settings.timestamps
        return [t for t in ids if t < self.eos or (keep_ts and t >= self.timestamp_begin)]

    @torch.inference_mode()
    def label(self, clips: Sequence[Clip]) -> list[LabelRecord]:
        enc = self.model.get_encoder()(self._features(clips)).last_hidden_state
        if self.encoder_cache is not None:
            for clip, states in zip(clips, enc, strict=True):
                self.encoder_cache.put(clip.hash, states)
        first = self._first_step(enc)
        no_speech = (
            first[:, self.no_speech].exp().tolist()
            if self.no_speech is not None
            else [0.0] * len(clips)
        )
        codes = list(self.lang_ids)
        lang_scores = first[:, [self.lang_ids[c] for c in codes]]
        detected = [codes[i] for i in lang_scores.argmax(-1).tolist()]
        languages = [c.language or d for c, d in zip(clips, detected, strict=True)]
        records: list[LabelRecord | None] = [None] * len(clips)
        for lang in dict.fromkeys(languages):
            idx = [i for i, lg in enumerate(languages) if lg == lang]
            for i, (ids, lp) in zip(idx, self._generate(enc[idx], lang), strict=True):
                text = self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
                records[i] = LabelRecord(
                    hash=clips[i].hash,
                    language=lang,
                    language_detected=clips[i].language is None,
                    text=text,
                    token_ids=ids,
                    avg_logprob=lp,
                    compression_ratio=compression_ratio(text),
                    no_speech_prob=float(no_speech[i]),
                    teacher_id=self.teacher_id,
                    settings_hash=self.settings.hash(),
                )
        return [r for r in records if r is not None]

    def _generate(self, enc: torch.Tensor, language: str) -> list[tuple[list[int], float]]:
        s = self.settings
        out = self.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=enc),
            attention_mask=every_state(enc),
            language=language,
            task=s.task,
            return_timestamps=s.timestamps,
            **token_budget(s.max_new_tokens),
            num_beams=s.num_beams,
            output_scores=True,
            return_dict_in_generate=True,
            # clips are at most 30 s: one generate call, whose scores come back as they are
            # (with timestamps, transformers would otherwise return long-form segments)
            force_unique_generate_call=True,
        )
        n_steps = len(out.scores)
        generated = out.sequences[:, -n_steps:]  # the prompt tokens carry no scores
        logprobs = avg_logprobs(out.scores, generated, self.eos)
        return [
            (self._content(row.tolist()), lp) for row, lp in zip(generated, logprobs, strict=True)
        ]


def label_clips(
    clips: Sequence[Clip],
    labeller: Labeller,
    cache: LabelCache,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Label the clips the cache lacks, one atomic cache file per batch. Returns how many."""
    done = cache.done()
    todo = [c for c in clips if c.hash not in done]
    for batch in batches(todo, batch_size):
        cache.write_batch(labeller.label(batch))
        if on_batch is not None:
            on_batch(len(batch))
    return len(todo)
