"""A local folder in Hugging Face ``audiofolder`` layout.

``metadata.jsonl`` (one object a line) or ``metadata.csv`` lists ``file_name`` (relative to the
folder) with optional ``text`` (or ``transcription``/``sentence``), ``language`` and ``speaker``.
Audio files in the folder that no metadata row names are still yielded, unlabelled, so nothing
in the folder is silently ignored. A name, listed or found, that is a link to a file outside the
folder is yielded with ``PATH_ESCAPES_ROOT`` and never read.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distilflow.sources.base import (
    BAD_METADATA,
    MISSING_FILE,
    PATH_ESCAPES_ROOT,
    SourceError,
    SourceItem,
    item_from_row,
    jsonl_rows,
    row_problem,
)

AUDIO_SUFFIXES = frozenset({".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".g722"})


def resolve_inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it stays inside ``root`` (symlinks resolved), else None."""
    if not relative or Path(relative).is_absolute():
        return None
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def file_reader(path: Path, name: str) -> Callable[[], bytes]:
    """A deferred read of one file, turning OS errors into SourceError naming the item."""

    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{name}: cannot read {path}: {exc.strerror or exc}") from exc

    return read


class AudioFolderSource:
    """Items of a local audiofolder."""

    def __init__(self, root: Path | str, language: str | None = None) -> None:
        self.root = Path(root)
        self.uri = str(root)
        self.language = language  # used when a row has no language

    def _rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
        """(line number, row or None when malformed, raw line) from the metadata file."""
        jsonl, csv_path = self.root / "metadata.jsonl", self.root / "metadata.csv"
        if jsonl.exists():
            with jsonl.open(encoding="utf-8") as fh:
                yield from jsonl_rows(fh)
        elif csv_path.exists():
            with csv_path.open(encoding="utf-8", newline="") as fh:
                for n, row in enumerate(csv.DictReader(fh), start=2):
                    yield n, dict(row), ",".join(str(v) for v in row.values())

    def _item(self, sid: str, row: dict[str, Any], problem: str | None, detail: str) -> SourceItem:
        read = file_reader(self.root / sid, f"{self.uri}/{sid}")
        return item_from_row(self.uri, sid, row, self.language, read, problem, detail)

    def items(self) -> Iterator[SourceItem]:
        if not self.root.is_dir():
            raise SourceError(f"{self.uri}: source folder does not exist")
        root = self.root.resolve()
        named: set[Path] = set()  # listed paths, as written and with links followed
        for n, row, raw in self._rows():
            why = row_problem(row, raw)
            if row is None or why is not None:
                yield self._item(f"metadata:{n}", {}, BAD_METADATA, f"line {n} {why}: {raw[:120]}")
                continue
            file_name = row["file_name"]
            named.add(root / file_name)
            resolved = resolve_inside(self.root, file_name)
            if resolved is None:
                detail = f"file_name {file_name!r} points outside {self.uri}"
                yield self._item(file_name, row, PATH_ESCAPES_ROOT, detail)
                continue
            named.add(resolved)
            problem = None if resolved.is_file() else MISSING_FILE
            detail = "" if problem is None else f"{file_name} is listed but does not exist"
            yield self._item(file_name, row, problem, detail)
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file() and path not in named:
                sid = path.relative_to(root).as_posix()
                target = path.resolve()
                if target.is_relative_to(root):
                    yield self._item(sid, {}, None, "")
                else:  # a link to a file elsewhere: never read
                    detail = f"{sid} links to {target}, outside {self.uri}"
                    yield self._item(sid, {}, PATH_ESCAPES_ROOT, detail)
