"""How a registered model decodes: the evaluation's settings, shipped in its model directory.

The register stage writes ``distilflow_decode.json`` into the model directory it registers: the
token budget (params.yaml ``evaluate.max_new_tokens``) and the repetition guard (``decode``:
``loop_repeats``, ``loop_min_tokens``) that the evaluation decoded with. Consumers
(:meth:`distilflow.register.consumer.RegisteredWhisper.from_dir`, hence ``load_registered`` and
the MLflow pyfunc) read it and decode the same way unless told otherwise. A directory without it
decodes with the defaults (128 tokens, the default guard). The format, one JSON object with its
keys sorted (params.yaml's names)::

    {"loop_min_tokens": 12, "loop_repeats": 3, "max_new_tokens": 128}

Unknown keys are ignored and a missing key takes its default (later versions may add keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilflow.config import DecodeConfig
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard, guard_of

DECODE_FILE = "distilflow_decode.json"
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class ServingDecode:
    """The token budget and the repetition guard a registered model decodes with."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    guard: LoopGuard = DEFAULT_GUARD

    def to_dict(self) -> dict[str, int]:
        return {
            "loop_min_tokens": self.guard.min_tokens,
            "loop_repeats": self.guard.min_repeats,
            "max_new_tokens": self.max_new_tokens,
        }


def serving_decode(max_new_tokens: int, decode: DecodeConfig) -> ServingDecode:
    """The evaluation's decoding: ``evaluate.max_new_tokens`` and the ``decode`` section."""
    return ServingDecode(int(max_new_tokens), guard_of(decode))


def write_decode(directory: Path, settings: ServingDecode) -> Path:
    """Write ``directory/distilflow_decode.json``; returns its path."""
    path = Path(directory) / DECODE_FILE
    path.write_text(json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n", "utf-8")
    return path


def _count(raw: dict[str, Any], key: str, default: int, path: Path, least: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{path}: {key} must be an integer >= {least}, got {value!r}")
    return value


def read_decode(directory: Path | str) -> ServingDecode:
    """The decoding recorded in ``directory`` (the defaults when it has no such file)."""
    path = Path(directory) / DECODE_FILE
    if not path.is_file():
        return ServingDecode()
    raw = json.loads(path.read_text("utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    repeats = _count(raw, "loop_repeats", DEFAULT_GUARD.min_repeats, path, 0)
    if repeats == 1:
        raise ValueError(f"{path}: loop_repeats must be 0 (off) or >= 2, got 1")
    min_tokens = _count(raw, "loop_min_tokens", DEFAULT_GUARD.min_tokens, path, 1)
    budget = _count(raw, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS, path, 1)
    return ServingDecode(budget, LoopGuard(repeats, min_tokens))
