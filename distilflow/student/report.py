"""The student stage's ``report.json``: written by the stage, read by its task and flow, the
registry's task and the results page (one module for all).

Fields are declared in the order the report has always had (the flow prints parts of it
unsorted); the file is written by ``atomic_write_json`` (key-sorted, indented), so a report reads
back equal and rewrites byte-identical. Importing this module loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distilflow.lineage import Lineage
from distilflow.report_file import JsonReport


@dataclass(frozen=True)
class TeacherSummary:
    """The teacher, scored on the student's dev clips before training."""

    model: str  # label.model as configured (a hub id or a path)
    id: str  # the loaded weights' fingerprint
    dev_wer: dict[str, float]  # language -> WER on the dev clips ({} on ranks other than 0)
    dev_wer_mean: float  # macro mean of dev_wer over the languages with a score
    parameters: int  # distinct parameters (tied weights counted once)


@dataclass(frozen=True)
class StudentSummary:
    """The best student checkpoint (the one published in ``model/``)."""

    decoder_layers_from_teacher: list[int]  # teacher decoder layers copied ([]: another init)
    audio_context: str  # student.audio_context: "padded" or "dynamic"
    parameters: int  # distinct parameters (tied weights counted once)
    best_step: int  # the step of the best dev score (-1: never evaluated)
    dev_wer: dict[str, float]  # language -> WER on the dev clips at best_step (NaN allowed)
    dev_wer_mean: float  # macro mean of dev_wer: the score the best checkpoint minimises


@dataclass(frozen=True)
class StudentReport(JsonReport):
    """The teacher and the best student on the same dev clips, the data and the run."""

    teacher: TeacherSummary  # the teacher's figures
    student: StudentSummary  # the best student's figures
    train_clips: int  # clips trained on
    dev_clips: int  # clips scored (the dev split, student.dev_fraction by content hash)
    train_languages: dict[str, int]  # language -> training clips, sorted by language
    steps: int  # optimiser steps taken (the last one, resumed runs included)
    resumed: bool  # True when the run continued from a checkpoint
    encoder_states_computed: int  # teacher encoder states computed (not found in the cache)
    history: list[dict[str, float]]  # per evaluation: {"step": n, language: dev WER, ...}
    lineage: Lineage  # where the student came from (teacher_id: the teacher's fingerprint)
    # training clips per target (student.targets): reference (the human text) or pseudo
    train_targets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StudentReport:
        return cls(
            teacher=TeacherSummary(**raw["teacher"]),
            student=StudentSummary(**raw["student"]),
            train_clips=raw["train_clips"],
            dev_clips=raw["dev_clips"],
            train_languages=dict(raw["train_languages"]),
            steps=raw["steps"],
            resumed=raw["resumed"],
            encoder_states_computed=raw["encoder_states_computed"],
            history=[dict(h) for h in raw["history"]],
            lineage=Lineage(**raw["lineage"]),
            train_targets=dict(raw.get("train_targets", {})),
        )
