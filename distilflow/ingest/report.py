"""The ingest stage's ``report.json``: written by the stage, read by the flow (one module for both).

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
class LanguageIngest:
    """One language's row (``und`` for clips without a language)."""

    kept: int  # clips of this language kept (in its manifest)
    quarantined: dict[str, int]  # quarantine reason -> clips, reasons sorted, kept ones left out
    hours_kept: float  # hours of kept audio, rounded to 4 decimals


@dataclass(frozen=True)
class IngestReport(JsonReport):
    """Counts per language and reason; ``input == kept + quarantined``."""

    input: int  # source items seen
    kept: int  # items kept (in a manifest)
    quarantined: int  # items quarantined, for any reason
    by_reason: dict[str, int]  # quarantine reason -> items, sorted by reason
    by_language: dict[str, LanguageIngest]  # language code -> its row, sorted by code
    lineage: Lineage  # where the manifests came from

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IngestReport:
        return cls(
            input=raw["input"],
            kept=raw["kept"],
            quarantined=raw["quarantined"],
            by_reason=dict(raw["by_reason"]),
            by_language={
                lang: LanguageIngest(row["kept"], dict(row["quarantined"]), row["hours_kept"])
                for lang, row in raw["by_language"].items()
            },
            lineage=Lineage(**raw["lineage"]),
        )
