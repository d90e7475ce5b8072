"""What a distillation run trains on: examples from label tables, and encoder states by clip.

Shared by the student stage, the experts stage and the benchmarks, so that each prepares its
training data the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from distilflow.decoding.greedy import EvalClip
from distilflow.models.encoder_cache import EncoderCache, fill
from distilflow.training.data import decoder_example, log_mel, prompt_ids, split_of
from distilflow.training.loop import TrainExample


def build_examples(
    df: pd.DataFrame, generation_config: Any, eos: int, dev_fraction: float
) -> tuple[list[TrainExample], list[EvalClip]]:
    """Train examples (prompt + pseudo-label) and dev clips (scored against the human text)."""
    train, dev = [], []
    for r in df.sort_values("hash").itertuples():
        if split_of(r.hash, dev_fraction) == "dev":
            reference = r.reference if isinstance(r.reference, str) and r.reference else r.text
            dev.append(EvalClip(r.hash, r.language, str(reference)))
            continue
        train.append(train_example(r.hash, r.language, r.token_ids, generation_config, eos))
    return train, dev


def train_example(
    clip_hash: str, language: str, token_ids: Sequence[int], generation_config: Any, eos: int
) -> TrainExample:
    """One training clip: the language's prompt, then the label's tokens and the end token."""
    prompt = prompt_ids(generation_config, language)
    inputs, labels = decoder_example(list(token_ids), prompt, eos)
    return TrainExample(clip_hash, language, inputs, labels)


class EncoderStates:
    """Encoder outputs of clips by hash: from the on-disk cache, or computed (frozen encoder)."""

    def __init__(
        self,
        encoder: Any,
        feature_extractor: Any,
        paths: dict[str, str],
        cache: EncoderCache | None,
        device: torch.device,
        batch_size: int = 8,
    ) -> None:
        self.encoder, self.fe, self.paths = encoder, feature_extractor, paths
        self.cache, self.device, self.batch_size = cache, device, batch_size
        self.dtype = next(encoder.parameters()).dtype

    def features(self, hashes: list[str]) -> torch.Tensor:
        return log_mel([self.paths[h] for h in hashes], self.fe).to(self.device, self.dtype)

    def warm(self, hashes: Sequence[str], progress: bool = False) -> int:
        """Fill the cache for ``hashes``; returns how many were computed."""
        if self.cache is None:
            return 0
        return fill(
            self.cache, self.encoder, self.features, list(hashes), self.batch_size, progress
        )

    def __call__(self, hashes: list[str]) -> torch.Tensor:
        if self.cache is not None:
            self.warm(hashes)
            states = self.cache.get_many(hashes)
            assert states is not None
            return states.to(self.device, torch.float32)
        with torch.no_grad():
            out: torch.Tensor = self.encoder(self.features(hashes)).last_hidden_state
        return out


class TrainableEncoderStates(EncoderStates):
    """The student's own encoder, with gradients (``freeze_encoder: false``)."""

    def __call__(self, hashes: list[str]) -> torch.Tensor:
        out: torch.Tensor = self.encoder(self.features(hashes)).last_hidden_state
        return out
