"""Training data for distillation: decoder sequences, the dev split, language-balanced sampling.

A training example is its target text (the teacher's label or the human reference, see
targets.py) behind Whisper's prompt, teacher-forced:

    decoder_input_ids  <|sot|> <|fr|>         <|transcribe|>  <|notimestamps|> t1  ... tn
    labels             <|fr|>  <|transcribe|> <|notimestamps|> t1              t2  ... EOT

so ``labels[i]`` is the token the decoder must predict after reading ``decoder_input_ids[i]``.
The language token is scored, as in Whisper's and Distil-Whisper's training: a student served
with ``language=None`` detects the language itself, and must keep the teacher's ability to.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.manifest import read_language_tables

IGNORE = -100  # label of positions that are not scored (prompt, padding)
MAX_TARGET_POSITIONS = 448  # Whisper decoder positions
SEQUENCE_KEYS = ("decoder_input_ids", "labels")  # the per-example keys ``collate`` pads
_SPLIT_BUCKETS = 2**32  # resolution of the hash split

# Columns of ``<filter.out_dir>/manifests/<lang>.parquet`` (see filter_stage.py), plus ours.
MANIFEST_COLUMNS = (
    "id",
    "hash",
    "path",
    "duration_s",
    "source",
    "source_id",
    "speaker",
    "reference",
    "language",
    "language_detected",
    "text",
    "token_ids",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
    "teacher_id",
    "settings_hash",
    "audio_path",
    "label_ok",
    "teacher_error",
)


def prompt_ids(
    generation_config: Any, language: str, task: str = "transcribe", timestamps: bool = False
) -> list[int]:
    """``<|startoftranscript|><|lang|><|task|>`` then ``<|notimestamps|>`` unless timestamps.

    ``language`` is a code (``fr``) or its token (``<|fr|>``); ids come from the model's
    ``GenerationConfig`` (``lang_to_id``, ``task_to_id``, ...).
    """
    lang_to_id: Mapping[str, int] = getattr(generation_config, "lang_to_id", None) or {}
    task_to_id: Mapping[str, int] = getattr(generation_config, "task_to_id", None) or {}
    if not lang_to_id:
        raise ValueError("the generation config has no language tokens (an English-only model?)")
    token = language if language.startswith("<|") else f"<|{language}|>"
    if token not in lang_to_id:
        known = ", ".join(sorted(t.strip("<|>") for t in lang_to_id)[:12])
        raise ValueError(f"language {language!r} is not one the model knows ({known}, ...)")
    if task not in task_to_id:
        raise ValueError(f"task {task!r} is not one of {sorted(task_to_id)}")
    ids = [
        int(generation_config.decoder_start_token_id),
        int(lang_to_id[token]),
        int(task_to_id[task]),
    ]
    return ids if timestamps else [*ids, int(generation_config.no_timestamps_token_id)]


def decoder_example(
    token_ids: Iterable[int],
    prompt: Sequence[int],
    eos_id: int,
    max_length: int = MAX_TARGET_POSITIONS,
) -> tuple[list[int], list[int]]:
    """(decoder_input_ids, labels) of one target text; every token after
    ``<|startoftranscript|>`` is scored, the prompt's language and task tokens too. Pure.

    Both lists have the same length: ``labels[i]`` is the token after ``decoder_input_ids[i]``
    (the last is EOS). Longer sequences are cut to ``max_length`` (then EOS is not scored).
    """
    if not prompt:
        raise ValueError("the prompt is empty: it needs at least <|startoftranscript|>")
    if max_length < len(prompt):
        raise ValueError(f"max_length {max_length} is shorter than the prompt ({len(prompt)})")
    tokens = [int(t) for t in token_ids]
    inputs = [int(t) for t in prompt] + tokens
    labels = [int(t) for t in prompt[1:]] + tokens + [int(eos_id)]
    return inputs[:max_length], labels[:max_length]


def collate(examples: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Pad a batch: ``decoder_input_ids`` with ``pad_id``, ``labels`` with -100, and the mask.

    Every other key of the examples (``hash``, ``language``, ...) passes through as a list.
    """
    if not examples:
        raise ValueError("an empty batch")
    lengths = [len(e["decoder_input_ids"]) for e in examples]
    shape = (len(examples), max(lengths))
    inputs = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    for i, (e, n) in enumerate(zip(examples, lengths, strict=True)):
        if len(e["labels"]) != n:
            raise ValueError(f"example {i}: {n} decoder inputs but {len(e['labels'])} labels")
        inputs[i, :n] = torch.as_tensor(list(e["decoder_input_ids"]), dtype=torch.long)
        labels[i, :n] = torch.as_tensor(list(e["labels"]), dtype=torch.long)
        mask[i, :n] = 1
    out: dict[str, Any] = {
        "decoder_input_ids": inputs,
        "labels": labels,
        "decoder_attention_mask": mask,
    }
    for key in examples[0]:
        if key not in SEQUENCE_KEYS:
            out[key] = [e[key] for e in examples]
    return out


def split_of(clip_hash: str, dev_fraction: float) -> Literal["train", "dev"]:
    """``dev`` for about ``dev_fraction`` of clips, decided by the content hash alone. Pure.

    A clip keeps its split when data is added, and raising the fraction only moves clips from
    train to dev.
    """
    if not 0.0 <= dev_fraction <= 1.0:
        raise ValueError(f"dev_fraction {dev_fraction} is not in [0, 1]")
    bucket = int(hashlib.sha256(f"split:{clip_hash}".encode()).hexdigest()[:8], 16)
    return "dev" if bucket < dev_fraction * _SPLIT_BUCKETS else "train"


def is_dev_clip(clip_hash: str, reference: str | None, dev_fraction: float) -> bool:
    """A dev clip: one with a human reference (scored against it) whose hash falls in the dev
    split. Drawn before the filter judges the teacher's label, so the dev split holds the clips
    the teacher gets wrong too (one-word clips, loops). Pure."""
    return bool(reference) and split_of(clip_hash, dev_fraction) == "dev"


def language_weights(counts: Mapping[str, int], temperature: float) -> dict[str, float]:
    """p(language) ∝ n^(1/T), normalised: T = 1 proportional to data, T → ∞ uniform. Pure.

    Languages with no examples get 0. Computed in log space, so small T cannot overflow.
    """
    if not temperature > 0:
        raise ValueError(f"temperature {temperature} must be > 0")
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"negative example counts: {dict(counts)}")
    logs = {lang: math.log(n) / temperature for lang, n in counts.items() if n > 0}
    if not logs:
        raise ValueError("no language has any example")
    top = max(logs.values())
    raw = {lang: math.exp(v - top) for lang, v in logs.items()}
    total = sum(raw.values())
    return {lang: raw[lang] / total if lang in raw else 0.0 for lang in sorted(counts)}


class BalancedSampler(Iterator[int]):
    """Endless example indices: a language drawn by ``language_weights``, then one of its examples.

    Within a language, examples come without replacement until all were drawn, then in a fresh
    shuffle. Seeded; ``state_dict``/``load_state_dict`` (JSON-safe) resume at the exact position.
    """

    def __init__(self, languages: Sequence[str], temperature: float, seed: int) -> None:
        """``languages[i]`` is the language of example ``i``."""
        if not languages:
            raise ValueError("no examples to sample from")
        self.by_lang: dict[str, list[int]] = {}
        for i, lang in enumerate(languages):
            self.by_lang.setdefault(lang, []).append(i)
        counts = {lang: len(ids) for lang, ids in self.by_lang.items()}
        self.weights = language_weights(counts, temperature)
        self._langs = list(self.weights)
        self._cum_weights = list(accumulate(self.weights[lang] for lang in self._langs))
        self._data_key = sorted(counts.items())  # what a saved state must have been made on
        self.rng = random.Random(seed)
        self.queues: dict[str, list[int]] = {lang: [] for lang in self._langs}

    def __next__(self) -> int:
        lang = self.rng.choices(self._langs, cum_weights=self._cum_weights)[0]
        queue = self.queues[lang]
        if not queue:
            queue.extend(self.by_lang[lang])
            self.rng.shuffle(queue)
        return queue.pop()

    def state_dict(self) -> dict[str, Any]:
        """The RNG and the examples left in each language's current pass (JSON-safe)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "queues": {lang: list(q) for lang, q in self.queues.items()},
            "counts": [list(item) for item in self._data_key],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where the sampler that wrote ``state`` stopped (same data only)."""
        counts = [tuple(item) for item in state.get("counts", self._data_key)]
        if counts != self._data_key:
            raise ValueError("the sampler state was saved for other data (language counts differ)")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.queues = {lang: [] for lang in self._langs}
        self.queues.update({lang: [int(i) for i in q] for lang, q in state["queues"].items()})


def load_training_examples(filtered_dir: Path, languages: list[str] | None) -> pd.DataFrame:
    """The filter stage's kept clips (all languages, or ``languages``), ``audio_path`` absolute.

    A requested language without a manifest is an error; an empty manifest gives no rows.
    """
    df = read_language_tables(Path(filtered_dir) / "manifests", Path(filtered_dir), languages)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in MANIFEST_COLUMNS})
    return df


def log_mel(audio_paths: Sequence[str], feature_extractor: Any) -> torch.Tensor:
    """Whisper's front end: log-mel of each clip padded (or cut) to 30 s, (B, n_mels, 3000)."""
    if not audio_paths:
        frames = int(feature_extractor.nb_max_frames)
        return torch.empty((0, int(feature_extractor.feature_size), frames))
    audio = [load_audio(p) for p in audio_paths]
    feats = feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")
    return torch.from_numpy(np.ascontiguousarray(feats.input_features, dtype=np.float32))
