"""A Mozilla Common Voice release, as unpacked from its archive.

Layout: ``<root>/<split>.tsv`` (``validated``, ``train``, ``dev``, ``test``, ``other``, ...) lists
one clip a row with tab-separated columns ``client_id``, ``path``, ``sentence``, ``up_votes``,
``down_votes``, ``age``, ``gender``, ``accents``, ``locale``, ``segment`` (newer releases add or
drop some); the audio is ``<root>/clips/<path>``, usually mp3. Only ``path`` is required.

Common Voice writes its TSV files without any quoting (a sentence may contain ``"``), so they
are read with ``csv.QUOTE_NONE``. A row this source cannot trust (wrong number of fields, no
``path``, invalid UTF-8) is yielded with ``BAD_METADATA``; nothing is dropped.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from distilflow.sources.audiofolder import file_reader, resolve_inside
from distilflow.sources.base import (
    BAD_METADATA,
    MISSING_FILE,
    PATH_ESCAPES_ROOT,
    SourceError,
    SourceItem,
    clean_text,
)

CLIPS_DIR = "clips"
PATH_COLUMN = "path"
TEXT_COLUMN = "sentence"
LOCALE_COLUMN = "locale"
SPEAKER_COLUMN = "client_id"
# A Common Voice locale as used for release folder names: "fr", "yue", "sv-SE", "rm-sursilv".
_LOCALE_RE = re.compile(r"^[a-z]{2,3}(?:-(?:[A-Z]{2}|[0-9]{3}|[a-z]{5,8}))?$")
_RAW_PREVIEW = 120  # characters of a bad row quoted in its detail


def looks_like_locale(name: str) -> bool:
    """Whether a folder name looks like a Common Voice locale code ("fr", "sv-SE", "yue")."""
    return bool(_LOCALE_RE.match(name))


def _unreadable(name: str, reason: str) -> Callable[[], bytes]:
    """A reader for an item that has no file to read (it carries a problem already)."""

    def read() -> bytes:
        raise SourceError(f"{name}: {reason}")

    return read


def _is_valid_utf8(fields: list[str]) -> bool:
    """False when decoding with ``surrogateescape`` left undecodable bytes in a field."""
    try:
        for field in fields:
            field.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CommonVoiceSource:
    """Items of one split of one Common Voice language release."""

    def __init__(
        self, root: Path | str, split: str = "validated", language: str | None = None
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.uri = str(root)
        self.tsv = self.root / f"{split}.tsv"
        self.clips = self.root / CLIPS_DIR
        folder = self.root.resolve().name
        # Fallback language: the configured one, else the release folder's name ("fr", ...).
        self.language = language or (folder if looks_like_locale(folder) else None)

    def _rows(self) -> Iterator[tuple[int, list[str], list[str]]]:
        """(line number, header, fields) for each non-blank data row of the split's TSV."""
        if not self.tsv.is_file():
            raise SourceError(f"{self.uri}: no {self.tsv.name} in the Common Voice release")
        with self.tsv.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = [h.strip() for h in next(reader, [])]
            if PATH_COLUMN not in header:
                raise SourceError(f"{self.uri}: {self.tsv.name} has no {PATH_COLUMN!r} column")
            for fields in reader:
                if fields:
                    yield reader.line_num, header, fields

    def _bad_row(self, line: int, fields: list[str], why: str) -> SourceItem:
        """An item for a row that cannot be described; its id names the TSV line."""
        sid = f"{self.tsv.name}:{line}"
        raw = "\t".join(fields).encode("utf-8", "backslashreplace").decode("utf-8")
        detail = f"{self.tsv.name} line {line} {why}: {raw[:_RAW_PREVIEW]}"
        return SourceItem(
            source=self.uri,
            source_id=sid,
            language=self.language,
            text=None,
            speaker=None,
            read=_unreadable(f"{self.uri}/{sid}", "malformed metadata row"),
            problem=BAD_METADATA,
            detail=detail,
        )

    def _check_row(self, header: list[str], fields: list[str]) -> str | None:
        """Why a row is malformed, or None when it is usable."""
        if len(fields) != len(header):
            return f"has {len(fields)} fields, the header {len(header)}"
        if not _is_valid_utf8(fields):
            return "is not valid UTF-8"
        if not fields[header.index(PATH_COLUMN)].strip():
            return f"has an empty {PATH_COLUMN!r}"
        return None

    def _item(self, row: dict[str, str]) -> SourceItem:
        """The item of a well-formed row, with PATH_ESCAPES_ROOT or MISSING_FILE if so."""
        clip = row[PATH_COLUMN].strip()
        resolved = resolve_inside(self.clips, clip)
        problem, detail = None, ""
        if resolved is None:
            problem, detail = PATH_ESCAPES_ROOT, f"path {clip!r} points outside {self.clips}"
        elif not resolved.is_file():
            problem, detail = MISSING_FILE, f"{CLIPS_DIR}/{clip} is listed but does not exist"
        name = f"{self.uri}/{clip}"
        read = (
            file_reader(resolved, name)
            if resolved is not None
            else _unreadable(name, "path escapes the clips folder")
        )
        return SourceItem(
            source=self.uri,
            source_id=clip,
            language=clean_text(row.get(LOCALE_COLUMN)) or self.language,
            text=clean_text(row.get(TEXT_COLUMN)),
            speaker=clean_text(row.get(SPEAKER_COLUMN)),
            read=read,
            problem=problem,
            detail=detail,
        )

    def items(self) -> Iterator[SourceItem]:
        """Every row of ``<split>.tsv``, in file order."""
        if not self.root.is_dir():
            raise SourceError(f"{self.uri}: Common Voice folder does not exist")
        for line, header, fields in self._rows():
            why = self._check_row(header, fields)
            if why is not None:
                yield self._bad_row(line, fields, why)
                continue
            yield self._item(dict(zip(header, fields, strict=True)))
