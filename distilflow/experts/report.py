"""The experts stage's ``<lang>/report.json``: written by the stage, read by its task and flow and
the results run's baselines (one module for all).

The file has one of two shapes: ``ExpertsReport`` (a language trained) or ``ExpertsSkipped`` (a
language without training clips). Fields are declared in the order the file's dicts have always
had; the file is written by ``atomic_write_json`` (key-sorted, indented), so a report reads back
equal (but for NaN WERs, which JSON keeps but no NaN equals) and rewrites byte-identical.
Importing this module loads no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilflow.lineage import Lineage
from distilflow.report_file import JsonReport


@dataclass(frozen=True)
class ExpertsLineage(Lineage):
    """A student lineage with the student the experts were trained on."""

    base_model: str = field(kw_only=True)  # the student's weights' fingerprint


@dataclass(frozen=True)
class ExpertsReport(JsonReport):
    """One language's experts (or baseline) against the student alone, on the student's dev
    clips of that language."""

    language: str  # the language trained
    method: str  # experts.method: "experts", or a baseline ("finetune", "lora")
    form: str | None  # experts.form ("full", "lowrank") for experts, None for a baseline
    gate: str | None  # experts.gate ("straight_through", "soft") for experts, None for a baseline
    student_dev_wer: float  # the student alone on the dev clips (step 0; NaN: no dev clip)
    dev_wer: float  # the chosen checkpoint on the dev clips, as served (NaN: no dev clip)
    # the chosen experts on dev with the hard 0/1 gate served (= dev_wer) and with the soft gate
    # sigmoid(G) instead: their gap is what a soft-trained gate loses at serving. None for a
    # baseline (no gate) and where the student alone is served (no experts to gate)
    hard_gate_dev_wer: float | None
    soft_gate_dev_wer: float | None
    # False when the experts did not beat the student alone on dev: a consumer (and the
    # registry's gate) may keep the shared path for this language
    improved: bool
    # "trained": the chosen trained checkpoint is published; "student": no trained step beat
    # the student alone (step 0), the published file records no experts and this language
    # decodes with the plain student everywhere it is served
    serves: str
    best_step: int  # the step of the best dev score (0: the student alone; -1: never evaluated)
    steps: int  # optimiser steps taken (the last one, resumed runs included)
    resumed: bool  # True when the run continued from a checkpoint
    train_clips: int  # this language's clips trained on
    dev_clips: int  # this language's dev clips
    inference_parameters: int  # the student and this language's experts, tied weights once
    trained_parameters: int  # parameters the optimiser updated
    history: list[dict[str, float]]  # per evaluation: {"step": n, language: dev WER}
    lineage: ExpertsLineage  # where the experts came from

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExpertsReport:
        return cls(
            **{k: v for k, v in raw.items() if k not in ("history", "lineage")},
            history=[dict(h) for h in raw["history"]],
            lineage=ExpertsLineage(**raw["lineage"]),
        )


@dataclass(frozen=True)
class ExpertsSkipped(JsonReport):
    """A language without training clips: no experts (inference keeps the shared path)."""

    language: str  # the language asked for
    method: str  # experts.method
    skipped: str  # why

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExpertsSkipped:
        return cls(**raw)


def language_report_from_dict(raw: dict[str, Any]) -> ExpertsReport | ExpertsSkipped:
    """Either shape of a language's ``report.json``, from its parsed JSON."""
    if "skipped" in raw:
        return ExpertsSkipped.from_dict(raw)
    return ExpertsReport.from_dict(raw)


def read_language_report(path: Path) -> ExpertsReport | ExpertsSkipped:
    """A language's ``report.json`` in either shape."""
    return language_report_from_dict(json.loads(path.read_text(encoding="utf-8")))
