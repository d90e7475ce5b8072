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
from distilflow.training.data import decoder_example, is_dev_clip, log_mel, prompt_ids
from distilflow.training.loop import TrainExample
from distilflow.training.targets import (
    PSEUDO,
    REFERENCE,
    TargetRule,
    clean_reference,
    reference_token_ids,
    row_target,
)


def build_examples(
    df: pd.DataFrame,
    generation_config: Any,
    eos: int,
    dev_fraction: float,
    tokenizer: Any,
    rule: TargetRule,
) -> tuple[list[TrainExample], list[EvalClip], dict[str, int]]:
    """Train examples (prompt + target text, ``rule`` choosing reference or teacher label), dev
    clips (the clips with a reference that the hash puts in the dev split, scored against it)
    and the count of training clips per target kind (clips with no target under ``rule`` are
    neither trained on nor counted)."""
    train, dev, kinds = [], [], {REFERENCE: 0, PSEUDO: 0}
    for r in df.sort_values("hash").itertuples():
        reference = clean_reference(r.reference)
        if is_dev_clip(r.hash, reference, dev_fraction):
            dev.append(EvalClip(r.hash, r.language, str(r.reference)))
            continue
        target = row_target(r, rule)
        if target is None:
            continue
        kinds[target] += 1
        tokens = (
            reference_token_ids(tokenizer, reference)
            if target == REFERENCE and reference
            else r.token_ids
        )
        train.append(train_example(r.hash, r.language, tokens, generation_config, eos))
    return train, dev, kinds


def train_example(
    clip_hash: str, language: str, token_ids: Sequence[int], generation_config: Any, eos: int
) -> TrainExample:
    """One training clip: the language's prompt, then the target's tokens and the end token."""
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
