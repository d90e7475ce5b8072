"""The filter stage's ``report.json``: written by the stage, read by the flow (one module for both).

Fields are declared in the order the report has always had; the file is written by
``atomic_write_json`` (key-sorted, indented), so a report reads back equal and rewrites
byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distilflow.lineage import Lineage
from distilflow.report_file import JsonReport


@dataclass(frozen=True)
class LanguageFilter:
    """One language's decisions."""

    input: int  # labels of this language
    kept: int  # of them, clips kept (in manifests/<lang>.parquet)
    dropped: dict[str, int]  # drop reason (the decision's status) -> clips, sorted by reason
    mean_error: float | None  # mean WER/CER against the reference (4 decimals); None: no reference
    mean_error_kept: float | None  # the same over the labels that passed; None when none has one
    # kept clips whose teacher label failed (reason -> clips): kept for their human reference,
    # the target of targets reference/auto and of the dev split; counted in ``kept`` too
    reference_only: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterReport(JsonReport):
    """Kept and dropped per language and reason; ``input == kept + dropped``."""

    input: int  # labels decided
    kept: int  # clips kept (teacher label passed, or the human reference is usable)
    dropped: int  # clips dropped, for any reason
    by_language: dict[str, LanguageFilter]  # language -> its row, sorted by language
    lineage: Lineage  # where decisions.parquet and the manifests came from

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FilterReport:
        return cls(
            input=raw["input"],
            kept=raw["kept"],
            dropped=raw["dropped"],
            by_language={
                lang: LanguageFilter(
                    input=row["input"],
                    kept=row["kept"],
                    dropped=dict(row["dropped"]),
                    mean_error=row["mean_error"],
                    mean_error_kept=row["mean_error_kept"],
                    reference_only=dict(row.get("reference_only", {})),
                )
                for lang, row in raw["by_language"].items()
            },
            lineage=Lineage(**raw["lineage"]),
        )
