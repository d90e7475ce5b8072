"""Model cards (Markdown) for registered models. Pure: no MLflow, no model loading.

The card is logged as ``model_card.md`` on the registration run and is the registry version's
description: what the model was trained on, how it scores per language, what it is for, what it
is not for, where it came from and why it was (or was not) promoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distilflow.register.gate import Decision, clean_scores, mean_of


@dataclass(frozen=True)
class CardInfo:
    """Everything a card shows."""

    model_name: str
    version: str | None  # registry version (None before registration)
    kind: str  # "student", "experts", ...
    wer: Mapping[str, Any]  # per-language dev WER (NaN/missing allowed)
    lineage: Mapping[str, Any]  # git_commit, params_hash, input_hash, teacher_id, ...
    data: Mapping[str, Any] = field(default_factory=dict)  # train/dev clip counts, teacher, ...
    decision: Decision | None = None
    audio_context: str = "padded (Whisper's 30 s window)"  # dynamic.describe_audio_context


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def metrics_table(wer: Mapping[str, Any], decision: Decision | None) -> list[str]:
    """Markdown table: language, WER, and the champion's WER and delta when there is one."""
    scores = clean_scores(wer)
    champ = decision.champion_wer if decision is not None else None
    intervals = decision.intervals if decision is not None else {}
    if champ is None:
        lines = ["| language | dev WER |", "| --- | ---: |"]
        lines += [f"| {lang} | {_fmt(v)} |" for lang, v in scores.items()]
    else:
        extra = " 95% interval (clips) |" if intervals else ""
        lines = [
            f"| language | dev WER | champion WER | delta |{extra}",
            "| --- | ---: | ---: | ---: |" + (" ---: |" if intervals else ""),
        ]
        for lang in sorted(set(scores) | set(champ)):
            delta = decision.deltas.get(lang) if decision is not None else None
            sign = "n/a" if delta is None else f"{delta:+.3f}"
            row = f"| {lang} | {_fmt(scores.get(lang))} | {_fmt(champ.get(lang))} | {sign} |"
            if intervals:
                row += f" {_interval(intervals.get(lang))} |"
            lines.append(row)
    mean = mean_of(scores, sorted(scores))
    cells = 0 if champ is None else 3 if intervals else 2  # empty cells after the mean
    lines.append(f"| **macro mean** | {_fmt(mean)} |" + " |" * cells)
    return lines


def _interval(values: Mapping[str, Any] | None) -> str:
    if not values:
        return "n/a"
    return f"[{values['low']:+.3f}, {values['high']:+.3f}] ({int(values['clips'])})"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_value(v)}" for k, v in sorted(value.items()))
    return str(value)


def _data_lines(data: Mapping[str, Any]) -> list[str]:
    if not data:
        return ["- not recorded"]
    return [f"- {key.replace('_', ' ')}: {_value(data[key])}" for key in sorted(data)]


def _decision_lines(decision: Decision | None) -> list[str]:
    if decision is None:
        return ["- not decided yet"]
    head = f"**{decision.verdict}** (tolerance {decision.tolerance:.3f} absolute WER"
    if decision.champion_version is not None:
        head += f", against champion version {decision.champion_version}"
    return [head + ")", "", *[f"- {r}" for r in decision.reasons]]


INTENDED_USE = (
    "Speech recognition (transcription, not translation) of 16 kHz mono audio in the languages "
    "of the table above, greedy decoding, up to 30 s a call. Load it with "
    "`distilflow.register.download.load_registered(uri).transcribe(audio, language=...)`."
)
LIMITATIONS = [
    "WER is measured on a small held-out split of the training corpus (pseudo-labelled by the "
    "teacher, scored against the human transcripts): it says little about other domains.",
    "The dev split is small (a few clips a language in the demo): one looping transcript moves "
    "a language's WER by tens of points. The promotion gate compares challenger and champion on "
    "the same dev clips with a paired bootstrap interval and, when the clips cannot resolve the "
    "tolerance, registers the version without promoting it (insufficient evidence).",
    "A distilled student inherits the teacher's errors and biases.",
    "No speaker, accent or noise-robustness evaluation; no timestamps are validated.",
]


def render_model_card(info: CardInfo) -> str:
    """The card as Markdown."""
    version = f" version {info.version}" if info.version else ""
    lines = [
        f"# {info.model_name}{version}",
        "",
        f"Kind: `{info.kind}`. A Whisper model distilled by distilflow (Distil-Whisper).",
        "",
        f"Audio context: {info.audio_context}.",
        "",
        "## Data",
        *_data_lines(info.data),
        "",
        "## Metrics (dev WER per language; lower is better)",
        *metrics_table(info.wer, info.decision),
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Limitations",
        *[f"- {item}" for item in LIMITATIONS],
        "",
        "## Lineage",
        *[f"- {k}: `{v}`" for k, v in sorted(info.lineage.items())],
        "",
        "## Promotion decision",
        *_decision_lines(info.decision),
    ]
    return "\n".join(lines) + "\n"
