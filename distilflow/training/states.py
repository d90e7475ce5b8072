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
from distilflow.training.packing import Piece, Window, pack
from distilflow.training.targets import (
    PSEUDO,
    REFERENCE,
    TargetRule,
    clean_reference,
    reference_token_ids,
    row_target,
)
from distilflow.training.timestamps import has_timestamps, text_tokens, timestamped_target


def build_examples(
    df: pd.DataFrame,
    generation_config: Any,
    eos: int,
    dev_fraction: float,
    tokenizer: Any,
    rule: TargetRule,
) -> tuple[list[TrainExample], list[EvalClip], dict[str, int], list[Window]]:
    """Train examples (prompt + target text, ``rule`` choosing reference or teacher label, with
    timestamp tokens on ``rule.timestamp_share`` of the clips whose label has them), dev clips
    (the clips with a reference that the hash puts in the dev split, scored against it), the
    count of training clips per target kind (clips with no target under ``rule`` are neither
    trained on nor counted; with a timestamp share, ``timestamps`` counts the clips trained with
    timestamp tokens) and the windows those clips are packed into (``rule.window_s`` > 0,
    packing.py: one example each, keyed by the window's hash; counted as ``windows``)."""
    train, dev, kinds = [], [], {REFERENCE: 0, PSEUDO: 0}
    pieces: list[Piece] = []
    if rule.timestamp_share > 0:
        kinds["timestamps"] = 0
    timestamp_begin = int(generation_config.no_timestamps_token_id) + 1
    for r in df.sort_values("hash").itertuples():
        reference = clean_reference(r.reference)
        if is_dev_clip(r.hash, reference, dev_fraction):
            dev.append(EvalClip(r.hash, r.language, str(r.reference)))
            continue
        target = row_target(r, rule)
        if target is None:
            continue
        kinds[target] += 1
        label = [int(t) for t in r.token_ids]
        from_reference = target == REFERENCE and bool(reference)
        text = (
            reference_token_ids(tokenizer, reference)
            if from_reference and reference
            else text_tokens(label, timestamp_begin)
        )
        stamped = None
        if has_timestamps(r.hash, rule.timestamp_share):
            stamped = timestamped_target(label, timestamp_begin, text if from_reference else None)
            kinds["timestamps"] += stamped is not None
        if stamped is not None and rule.window_s > 0:
            pieces.append(
                Piece(r.hash, r.language, voice_of(r), float(r.duration_s), tuple(stamped))
            )
            continue
        tokens = text if stamped is None else stamped
        train.append(
            train_example(
                r.hash, r.language, tokens, generation_config, eos, timestamps=stamped is not None
            )
        )
    windows = pack(pieces, rule.window_s, rule.gap_s, timestamp_begin) if pieces else []
    for w in windows:
        train.append(
            train_example(w.hash, w.language, w.tokens, generation_config, eos, timestamps=True)
        )
    if rule.timestamp_share > 0 and rule.window_s > 0:
        kinds["windows"] = len(windows)
    return train, dev, kinds, windows


def voice_of(row: Any) -> str:
    """Who speaks in a clip, for packing: its speaker, else its source, else "" (a missing value
    of the table, None or NA, counts as absent). Pure."""
    for name in ("speaker", "source"):
        value = getattr(row, name, None)
        if value is not None and not pd.isna(value) and str(value):
            return str(value)
    return ""


def train_example(
    clip_hash: str,
    language: str,
    token_ids: Sequence[int],
    generation_config: Any,
    eos: int,
    timestamps: bool = False,
) -> TrainExample:
    """One training clip: the language's prompt (``<|notimestamps|>`` unless ``timestamps``),
    then the target's tokens and the end token."""
    prompt = prompt_ids(generation_config, language, timestamps=timestamps)
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
