"""The label stage's ``report.json``: written by the stage, read by the flow (one module for both).

Fields are declared in the order the report has always had; the file is written by
``atomic_write_json`` (key-sorted, indented), so a report reads back equal and rewrites
byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distilflow.lineage import Lineage
from distilflow.report_file import JsonReport


@dataclass(frozen=True)
class TeacherInfo:
    """The teacher that labelled the clips."""

    model: str  # label.model as configured (a hub id or a path)
    id: str  # the loaded weights' fingerprint (labels are cached under it)
    backend: str  # label.backend: "transformers" or "ctranslate2"


@dataclass(frozen=True)
class LabelReport(JsonReport):
    """What the label files hold."""

    clips: int  # clips in the ingest manifests
    labelled: int  # of them, clips with a cached label (rows across labels/<lang>.parquet)
    by_language: dict[str, int]  # language -> rows of its labels/<lang>.parquet, sorted
    language_detected: dict[str, int]  # language -> clips whose language the teacher detected
    teacher: TeacherInfo  # who labelled them
    lineage: Lineage  # where the label files came from

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LabelReport:
        return cls(
            clips=raw["clips"],
            labelled=raw["labelled"],
            by_language=dict(raw["by_language"]),
            language_detected=dict(raw["language_detected"]),
            teacher=TeacherInfo(**raw["teacher"]),
            lineage=Lineage(**raw["lineage"]),
        )
