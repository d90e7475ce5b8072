"""The contract every ingestion source fulfils.

A source yields :class:`SourceItem` records. Reading the audio bytes is deferred to
``item.read()`` so that ingestion can hash, cache and quarantine item by item. A source never
decodes audio and never drops an item: anything it cannot describe properly is yielded with
``problem`` set, and ingestion quarantines it with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# Quarantine reasons a source may set on an item (ingestion adds the audio-level ones).
PATH_ESCAPES_ROOT = "path_escapes_root"
UNREADABLE = "unreadable"
MISSING_FILE = "missing_file"
BAD_METADATA = "bad_metadata"


class SourceError(Exception):
    """Reading one item failed; the message names the item and the reason."""


@dataclass(frozen=True)
class SourceItem:
    """One input clip as the source describes it, before decoding."""

    source: str  # the source's URI as configured, e.g. "data/demo" or "s3://bucket/prefix"
    source_id: str  # stable id inside the source: relative path, Common Voice clip, HF row, S3 key
    language: str | None  # ISO 639-1 code as given by the source (validated later)
    text: str | None  # reference transcript; None when the source has none (unlabelled clip)
    speaker: str | None
    read: Callable[[], bytes]  # returns the encoded audio bytes; raises SourceError
    problem: str | None = None  # a quarantine reason found while listing (never read then)
    detail: str = ""  # human-readable explanation of ``problem``


class Source(Protocol):
    """Anything that can list its items."""

    def items(self) -> Iterator[SourceItem]: ...


def clean_text(value: object) -> str | None:
    """Normalise a transcript cell: None, NaN and blank strings mean 'no transcript'."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    text = str(value).strip()
    return text or None


MetadataRow = tuple[int, dict[str, Any] | None, str]  # (line number, row or None, raw line)


def jsonl_rows(lines: Iterable[str]) -> Iterator[MetadataRow]:
    """Rows of a ``metadata.jsonl``; a line that is not a JSON object gives ``None``."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            yield n, None, line.strip()
            continue
        yield n, row if isinstance(row, dict) else None, line.strip()


def row_problem(row: Mapping[str, Any] | None, raw: str) -> str | None:
    """Why a metadata row names no file (``raw``: its line), or None when it has a ``file_name``.

    The answer completes "line N ...": ``is not valid JSON (...)``, ``is not a JSON object`` or
    ``has no file_name``. Pure.
    """
    if row is None:
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            return f"is not valid JSON ({exc.msg}, column {exc.colno})"
        return "is not a JSON object"
    file_name = row.get("file_name")
    return None if isinstance(file_name, str) and file_name else "has no file_name"


TEXT_KEYS = ("text", "transcription", "sentence")  # transcript column names, in order


def first_text(row: Mapping[str, Any]) -> str | None:
    """The transcript of a metadata row: ``text``, else ``transcription`` or ``sentence``."""
    for key in TEXT_KEYS:
        if key in row:
            return clean_text(row[key])
    return None


def item_from_row(
    source: str,
    source_id: str,
    row: Mapping[str, Any],
    default_language: str | None,
    read: Callable[[], bytes],
    problem: str | None = None,
    detail: str = "",
) -> SourceItem:
    """A SourceItem from an audiofolder-convention metadata row (text, language, speaker)."""
    return SourceItem(
        source=source,
        source_id=source_id,
        language=clean_text(row.get("language")) or default_language,
        text=first_text(row),
        speaker=clean_text(row.get("speaker")),
        read=read,
        problem=problem,
        detail=detail,
    )
