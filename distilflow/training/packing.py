"""Timestamped training windows: several clips of one voice packed into one 30 s window.

Long-form decoding reads 30 s of continuous speech at a time and moves on by the timestamps the
model writes. A student that learnt timestamps on single clips of a few seconds learns "one
segment, then the end of the text": on a window of continuous speech it stops after the first
sentence and the long-form algorithm skips the rest (docs/evaluate.md, Long audio). Distil-Whisper
trains its timestamps on 30 s windows of long-form speech; from short clips, distilflow builds such
windows: the clips chosen for timestamps (``timestamp_share``), grouped by language and voice
(speaker, else source) and taken in hash order, are laid one after another with ``gap_s`` of
silence until the next would pass ``window_s``. Each window is one training example: its audio
(the clips at their offsets, written once under a content-hashed name) and a target holding every
clip's segments with their timestamps moved by the clip's offset.

Offsets are multiples of Whisper's 20 ms timestamp step, so a moved timestamp is exact, and a
clip's timestamps are held within its own length, so segments never overlap. Pure functions but
``write_window_audio``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilflow.audio import SAMPLE_RATE, quantize, write_flac

STEP_S = 0.02  # Whisper's timestamp resolution
MAX_STEPS = 1500  # <|30.00|>: the last timestamp token


@dataclass(frozen=True)
class Piece:
    """A clip that trains with timestamps: its timestamped target, times from the clip's start."""

    hash: str
    language: str
    voice: str  # speaker, else source: a window holds one voice
    duration_s: float
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Window:
    """Clips of one voice laid one after another: (clip hash, offset in 20 ms steps) each."""

    hash: str
    language: str
    parts: tuple[tuple[str, int], ...]
    duration_s: float
    tokens: tuple[int, ...]  # the target: every part's segments at their place in the window


def steps_up(seconds: float) -> int:
    """``seconds`` in timestamp steps, rounded up. Pure."""
    return math.ceil(round(seconds / STEP_S, 6))


def steps_down(seconds: float) -> int:
    """``seconds`` in whole timestamp steps, rounded down. Pure."""
    return math.floor(round(seconds / STEP_S, 6))


def shifted(tokens: Sequence[int], offset: int, limit: int, timestamp_begin: int) -> list[int]:
    """``tokens`` with each timestamp moved by ``offset`` steps and held at ``limit`` steps (the
    clip's length) at most; text tokens as they are. Pure."""
    out = []
    for t in (int(t) for t in tokens):
        out.append(
            t if t < timestamp_begin else timestamp_begin + offset + min(t - timestamp_begin, limit)
        )
    return out


def window_hash(parts: Sequence[tuple[str, int]]) -> str:
    """The content hash of a window: its clips and their offsets. Pure."""
    key = ",".join(f"{h}@{o}" for h, o in parts)
    return hashlib.sha256(f"window:{key}".encode()).hexdigest()


def pack(
    pieces: Sequence[Piece], window_s: float, gap_s: float, timestamp_begin: int
) -> list[Window]:
    """The windows of ``pieces``: by (language, voice), in hash order, each clip after the last
    one's end plus ``gap_s``, until the next would end past ``window_s`` (a clip longer than the
    window is a window alone). Windows come in the order of their first clip's hash. Pure."""
    if not 0 < window_s <= MAX_STEPS * STEP_S:
        raise ValueError(f"window_s {window_s} must be in (0, 30]")
    if gap_s < 0:
        raise ValueError(f"gap_s {gap_s} must be >= 0")
    groups: dict[tuple[str, str], list[Piece]] = {}
    for p in sorted(pieces, key=lambda p: p.hash):
        groups.setdefault((p.language, p.voice), []).append(p)
    limit, gap = steps_down(window_s), steps_up(gap_s)
    windows: list[Window] = []
    for (language, _), group in groups.items():
        current: list[tuple[Piece, int]] = []
        end = 0  # steps: where the next clip may start
        for p in group:
            length = steps_up(p.duration_s)
            if current and end + length > limit:
                windows.append(_window(language, current, timestamp_begin))
                current, end = [], 0
            current.append((p, end))
            end += length + gap
        if current:
            windows.append(_window(language, current, timestamp_begin))
    return sorted(windows, key=lambda w: w.parts[0][0])


def _window(language: str, placed: list[tuple[Piece, int]], timestamp_begin: int) -> Window:
    parts = tuple((p.hash, offset) for p, offset in placed)
    tokens: list[int] = []
    for p, offset in placed:
        limit = min(steps_down(p.duration_s), MAX_STEPS - offset)
        tokens += shifted(p.tokens, offset, max(0, limit), timestamp_begin)
    last, length = placed[-1]
    duration = min(length * STEP_S + last.duration_s, MAX_STEPS * STEP_S)
    return Window(window_hash(parts), language, parts, duration, tuple(tokens))


def window_audio(window: Window, load: Callable[[str], np.ndarray]) -> np.ndarray:
    """A window's samples: each clip (``load(clip hash)``, 16 kHz) at its offset, silence between,
    cut at 30 s. Pure given ``load``."""
    n = round(window.duration_s * SAMPLE_RATE)
    out = np.zeros(n, dtype=np.float32)
    for clip, offset in window.parts:
        start = round(offset * STEP_S * SAMPLE_RATE)
        audio = load(clip)[: max(0, n - start)]
        out[start : start + len(audio)] = audio
    return out


def write_window_audio(
    windows: Sequence[Window], load: Callable[[str], np.ndarray], out_dir: Path
) -> dict[str, str]:
    """Each window's audio as ``out_dir/<hash>.flac`` (written once: the name is its content's
    hash, so a re-run or a resumed one finds it); window hash -> file."""
    paths: dict[str, str] = {}
    for w in windows:
        path = out_dir / f"{w.hash}.flac"
        if not path.exists():
            write_flac(path, quantize(window_audio(w, load)))
        paths[w.hash] = str(path)
    return paths


def window_texts(windows: Sequence[Window], texts: Mapping[str, str]) -> dict[str, str]:
    """Each window's text: its clips' texts (``texts``: clip hash -> text) in order. Pure."""
    return {w.hash: " ".join(texts[h].strip() for h, _ in w.parts) for w in windows}
