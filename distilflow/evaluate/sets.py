"""The sets the evaluation stage scores: the student's dev split and out-of-domain audiofolders.

- ``dev``: the filter stage's kept clips whose ``split_of(hash, student.dev_fraction)`` is
  ``dev`` (no training step saw them), scored against the human reference. Clips without a
  reference are left out and counted.
- any audiofolder named in ``evaluate.extra_sets``: ``metadata.jsonl`` with ``file_name``,
  ``text`` and ``language`` per line (the layout of asterisk-dev), audio decoded with
  ``distilflow.audio.load_audio``.

A malformed line, a missing or unreadable file raises :class:`EvalSetError` naming the item.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distilflow.audio import bytes_hash, load_audio
from distilflow.languages import normalize_language
from distilflow.lineage import combine_hashes
from distilflow.training.data import is_dev_clip, load_training_examples, split_of
from distilflow.training.targets import clean_reference

DEV = "dev"  # the name of the student's dev split among the eval sets


class EvalSetError(ValueError):
    """An eval set that cannot be read; the message names the set and the item."""


class EmptyDevSplitError(EvalSetError):
    """No kept clip with a reference falls in the dev split (too little data so far)."""


@dataclass(frozen=True)
class AudioClip:
    """One clip to transcribe: where its audio is and what it should read."""

    id: str  # dev: the content hash; audiofolders: the file_name
    path: str  # absolute path of the audio file
    language: str  # Whisper language code; decoding is forced to it
    reference: str  # the human transcript
    hash: str  # content hash of the audio (lineage)


@dataclass(frozen=True)
class EvalSet:
    """A named list of clips."""

    name: str
    clips: tuple[AudioClip, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> clips left out

    def languages(self) -> list[str]:
        return sorted({c.language for c in self.clips})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(c.language for c in self.clips).items()))

    def input_hash(self) -> str:
        return combine_hashes(c.hash for c in self.clips)


def cap_per_language(clips: Sequence[AudioClip], cap: int | None) -> list[AudioClip]:
    """At most ``cap`` clips per language, the first by id; all when ``cap`` is None. Pure."""
    ordered = sorted(clips, key=lambda c: (c.language, c.id))
    if cap is None:
        return ordered
    taken: Counter[str] = Counter()
    out = []
    for c in ordered:
        if taken[c.language] < cap:
            taken[c.language] += 1
            out.append(c)
    return out


def dev_set(
    filtered_dir: Path,
    dev_fraction: float,
    cap: int | None = None,
    languages: list[str] | None = None,
) -> EvalSet:
    """The student's dev split of the filter stage's kept clips, with a human reference; from
    every manifest, or from those of ``languages`` only (each must exist)."""
    if not (Path(filtered_dir) / "manifests").is_dir():
        raise EvalSetError(f"{DEV}: {filtered_dir}/manifests not found: run the filter stage")
    try:
        df = load_training_examples(Path(filtered_dir), languages)
    except FileNotFoundError as exc:
        raise EvalSetError(f"{DEV}: {exc}") from exc
    clips, no_reference = [], 0
    for r in df.itertuples():
        if split_of(str(r.hash), dev_fraction) != DEV:
            continue
        ref = r.reference if isinstance(r.reference, str) else ""
        if not is_dev_clip(str(r.hash), clean_reference(ref), dev_fraction):
            no_reference += 1  # trained on instead (distilflow/training/data.py: is_dev_clip)
            continue
        clips.append(AudioClip(str(r.hash), str(r.audio_path), str(r.language), ref, str(r.hash)))
    if not clips:
        raise EmptyDevSplitError(
            f"{DEV}: no clip of {filtered_dir} with a reference falls in the dev split "
            f"(student.dev_fraction={dev_fraction})"
        )
    skipped = {"no_reference": no_reference} if no_reference else {}
    return EvalSet(DEV, tuple(cap_per_language(clips, cap)), skipped)


def audiofolder_set(name: str, root: Path | str, cap: int | None = None) -> EvalSet:
    """An audiofolder with ``metadata.jsonl`` (file_name, text, language per line)."""
    root = Path(root)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise EvalSetError(f"{name}: {meta} not found (an audiofolder needs metadata.jsonl)")
    clips = []
    for number, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            clips.append(_metadata_clip(name, root, f"{meta}:{number}", line))
    if not clips:
        raise EvalSetError(f"{name}: {meta} lists no clip")
    return EvalSet(name, tuple(cap_per_language(clips, cap)))


def _metadata_clip(name: str, root: Path, where: str, line: str) -> AudioClip:
    """One checked line of metadata.jsonl."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalSetError(f"{name}: {where}: not valid JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise EvalSetError(f"{name}: {where}: expected a JSON object")
    for key in ("file_name", "text", "language"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise EvalSetError(f"{name}: {where}: missing or empty {key!r}")
    language = normalize_language(row["language"])
    if language is None:
        raise EvalSetError(f"{name}: {where}: unknown language {row['language']!r}")
    path = Path(os.path.abspath(root / row["file_name"]))  # symlinked files are fine
    if not path.is_relative_to(os.path.abspath(root)):
        raise EvalSetError(f"{name}: {where}: {row['file_name']!r} is outside {root}")
    try:
        digest = bytes_hash(path.read_bytes())
    except OSError as exc:
        raise EvalSetError(f"{name}: {where}: cannot read {row['file_name']!r}: {exc}") from exc
    return AudioClip(row["file_name"], str(path), language, row["text"], digest)


def read_clip_audio(eval_set: str, clip: AudioClip) -> np.ndarray:
    """The clip's 16 kHz mono samples; an undecodable or empty file names the clip."""
    try:
        audio = load_audio(clip.path)
    except Exception as exc:
        raise EvalSetError(
            f"{eval_set}: clip {clip.id} ({clip.path}): cannot decode: {exc}"
        ) from exc
    if audio.size == 0:
        raise EvalSetError(f"{eval_set}: clip {clip.id} ({clip.path}): no samples")
    return audio
