"""What every training run prepares the same way: the frozen teacher, the examples of a label
table, and the encoder states of the teacher and of the student.

Shared by the student stage, the experts stage and the experts benchmark. Nothing here draws
random numbers: each caller seeds (``seed_training``) and creates its student where it always
has, so a run's initial weights do not depend on this module.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from distilflow.audio import load_audio
from distilflow.decoding.greedy import EvalClip
from distilflow.lineage import combine_hashes
from distilflow.models.dynamic import DYNAMIC
from distilflow.models.encoder_cache import states_cache
from distilflow.training.dynamic import DynamicStudentStates
from distilflow.training.loop import TrainExample
from distilflow.training.packing import Window, write_window_audio
from distilflow.training.states import EncoderStates, TrainableEncoderStates, build_examples
from distilflow.training.targets import TargetRule

if TYPE_CHECKING:
    from distilflow.models.load import LoadedWhisper

StudentStates = EncoderStates | DynamicStudentStates  # dynamic: on each clip's own length


def eos_of(generation_config: Any) -> int:
    """The end-of-text token id (the first, where the config lists several)."""
    eos = generation_config.eos_token_id
    return int(eos if isinstance(eos, int) else eos[0])


def load_frozen_teacher(ref: str, cache_dir: Path, device: torch.device) -> LoadedWhisper:
    """The teacher ``ref`` names, on ``device``, in eval mode, without gradients."""
    from distilflow.models import load_whisper

    loaded = load_whisper(ref, cache_dir=cache_dir)
    loaded.model.to(device)  # type: ignore[arg-type]
    loaded.model.eval()  # type: ignore[no-untyped-call]
    loaded.model.requires_grad_(False)
    return loaded


@dataclass
class RunData:
    """A label table made ready to train on: examples, and each clip's audio and length."""

    train: list[TrainExample]
    dev: list[EvalClip]
    paths: dict[str, str]  # clip hash -> audio file, in the table's order
    durations: dict[str, float]  # clip hash -> seconds, in the table's order
    data_hash: str  # the table's clips and targets: in the lineage and the resume fingerprint
    targets: dict[str, int]  # training clips per target kind (reference, pseudo)
    windows: list[Window]  # timestamped clips packed together (their audio is in ``paths``)

    def clip_languages(self) -> dict[str, int]:
        """Training clips by language, sorted (a window counts each of its clips)."""
        sizes = {w.hash: len(w.parts) for w in self.windows}
        counts = Counter[str]()
        for e in self.train:
            counts[e.language] += sizes.get(e.hash, 1)
        return dict(sorted(counts.items()))


def run_data(
    df: pd.DataFrame,
    loaded: LoadedWhisper,
    dev_fraction: float,
    rule: TargetRule,
    cache_dir: Path | None = None,
) -> RunData:
    """Train examples (targets chosen by ``rule``) and dev clips (split by content hash, with a
    reference) of a non-empty table of the filter's kept clips. Packed windows' audio is written
    once under ``cache_dir/windows`` (needed when ``rule`` packs any)."""
    config = loaded.model.generation_config
    tokenizer = loaded.processor.tokenizer
    train, dev, kinds, windows = build_examples(
        df, config, eos_of(config), dev_fraction, tokenizer, rule
    )
    # what each clip learns is part of the data: a change of targets is another run
    trained = [f"{e.hash}:{hashlib.sha256(str(e.labels).encode()).hexdigest()}" for e in train]
    paths = dict(zip(df["hash"], df["audio_path"], strict=True))
    durations = dict(zip(df["hash"], df["duration_s"].astype(float), strict=True))
    if windows:
        if cache_dir is None:
            raise ValueError(
                "timestamped clips are packed into windows: a cache_dir must hold them"
            )
        clip_paths = dict(paths)
        paths |= write_window_audio(
            windows, lambda h: load_audio(clip_paths[h]), cache_dir / "windows"
        )
        durations |= {w.hash: w.duration_s for w in windows}
    return RunData(
        train, dev, paths, durations, combine_hashes([*df["hash"], *trained]), kinds, windows
    )


def frozen_states(
    encoder: Any,
    feature_extractor: Any,
    paths: dict[str, str],
    cache_dir: Path | None,
    device: torch.device,
) -> EncoderStates:
    """A frozen encoder's states, kept in the cache under ``cache_dir`` (None: no cache, each
    call computes them)."""
    cache = None
    if cache_dir is not None:  # keyed by the encoder's weights and the extractor's padding
        cache = states_cache(cache_dir / "encoder", encoder, feature_extractor)
    return EncoderStates(encoder, feature_extractor, paths, cache, device)


def trainable_states(encoder: Any, like: StudentStates) -> TrainableEncoderStates:
    """``encoder``'s states with gradients, on the clips, features and device of ``like``."""
    return TrainableEncoderStates(encoder, like.fe, like.paths, None, like.device)


def student_states(
    encoder: Any,
    feature_extractor: Any,
    paths: dict[str, str],
    device: torch.device,
    *,
    context: str,
    multiple_s: float,
    margin_s: float = 0.0,
    trainable: bool,
    cache_dir: Path | None,
) -> StudentStates:
    """The student's encoder states: on each clip's own length (rounded up to ``multiple_s``)
    for a dynamic-context student, else with gradients when its encoder trains, else frozen
    and cached as ``frozen_states``."""
    if context == DYNAMIC:  # the encoder reads each batch's own length: nothing to cache
        return DynamicStudentStates(encoder, feature_extractor, paths, multiple_s, device, margin_s)
    if trainable:
        return TrainableEncoderStates(encoder, feature_extractor, paths, None, device)
    return frozen_states(encoder, feature_extractor, paths, cache_dir, device)
