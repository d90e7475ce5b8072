"""How a registered model decodes: the evaluation's settings, shipped in its model directory.

The register stage writes ``distilflow_decode.json`` into the model directory it registers: the
token budget (params.yaml ``evaluate.max_new_tokens``) and the repetition guard (``decode``:
``loop_repeats``, ``loop_min_tokens``) that the evaluation decoded with, and the long-form
safeguards (``decode``: ``temperatures``, the thresholds) for audio over 30 s and subtitles.
Consumers (:meth:`distilflow.register.consumer.RegisteredWhisper.from_dir`, hence
``load_registered`` and the MLflow pyfunc) read it and decode the same way unless told
otherwise. A directory without it decodes with the defaults (128 tokens, the default guard).
The format, one JSON object with its keys sorted (params.yaml's names)::

    {"compression_ratio_threshold": 1.35, "condition_on_prev_tokens": false,
     "logprob_threshold": -1.0, "loop_min_tokens": 12, "loop_repeats": 3, "max_new_tokens": 128,
     "no_speech_threshold": 0.6, "temperatures": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]}

Unknown keys are ignored and a missing key takes its default (later versions may add keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilflow.config import DecodeConfig
from distilflow.config.checks import longform_problem
from distilflow.decoding.longform import DEFAULT_LONGFORM, LongForm, longform_of
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard, guard_of

DECODE_FILE = "distilflow_decode.json"
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class ServingDecode:
    """The token budget, the repetition guard and the long-form safeguards a registered model
    decodes with."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    guard: LoopGuard = DEFAULT_GUARD
    longform: LongForm = DEFAULT_LONGFORM

    def to_dict(self) -> dict[str, Any]:
        lf = self.longform
        return {
            "compression_ratio_threshold": lf.compression_ratio_threshold,
            "condition_on_prev_tokens": lf.condition_on_prev_tokens,
            "logprob_threshold": lf.logprob_threshold,
            "loop_min_tokens": self.guard.min_tokens,
            "loop_repeats": self.guard.min_repeats,
            "max_new_tokens": self.max_new_tokens,
            "no_speech_threshold": lf.no_speech_threshold,
            "temperatures": list(lf.temperatures),
        }


def serving_decode(max_new_tokens: int, decode: DecodeConfig) -> ServingDecode:
    """The evaluation's decoding: ``evaluate.max_new_tokens`` and the ``decode`` section."""
    return ServingDecode(int(max_new_tokens), guard_of(decode), longform_of(decode))


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
    return ServingDecode(budget, LoopGuard(repeats, min_tokens), _longform(raw, path))


def _threshold(raw: dict[str, Any], key: str, default: float | None, path: Path) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path}: {key} must be a number or null, got {value!r}")
    return float(value)


def _longform(raw: dict[str, Any], path: Path) -> LongForm:
    """The long-form safeguards of a decode file; missing keys take the defaults."""
    d = DEFAULT_LONGFORM
    temps = raw.get("temperatures", list(d.temperatures))
    if not isinstance(temps, list) or any(
        isinstance(t, bool) or not isinstance(t, int | float) for t in temps
    ):
        raise ValueError(f"{path}: temperatures must be a list of numbers, got {temps!r}")
    condition = raw.get("condition_on_prev_tokens", d.condition_on_prev_tokens)
    if not isinstance(condition, bool):
        raise ValueError(f"{path}: condition_on_prev_tokens must be true or false")
    longform = LongForm(
        temperatures=tuple(float(t) for t in temps),
        compression_ratio_threshold=_threshold(
            raw, "compression_ratio_threshold", d.compression_ratio_threshold, path
        ),
        logprob_threshold=_threshold(raw, "logprob_threshold", d.logprob_threshold, path),
        no_speech_threshold=_threshold(raw, "no_speech_threshold", d.no_speech_threshold, path),
        condition_on_prev_tokens=condition,
    )
    problem = longform_problem(
        longform.temperatures,
        longform.compression_ratio_threshold,
        longform.logprob_threshold,
        longform.no_speech_threshold,
    )
    if problem:
        raise ValueError(f"{path}: {problem}")
    return longform
