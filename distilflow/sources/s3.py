"""An S3 prefix in Hugging Face ``audiofolder`` layout: ``s3://bucket/prefix``.

``<prefix>/metadata.jsonl`` (or ``metadata.csv``) lists ``file_name`` relative to the prefix,
with optional ``text`` (or ``transcription``/``sentence``), ``language`` and ``speaker``. Audio
objects under the prefix that no metadata row names are still yielded, unlabelled, so nothing is
silently lost; a row naming an object that does not exist is yielded with ``MISSING_FILE``, one
whose ``file_name`` is absolute or contains ``..`` with ``PATH_ESCAPES_ROOT``.

Credentials come only from boto3's default chain (environment, shared files, instance role);
they are never taken from configuration and never logged. ``endpoint_url`` points at an
S3-compatible server (moto, MinIO, ...). Transient errors are retried by botocore (standard
mode, 5 attempts); a body stream cut mid-read is fetched again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from distilflow.sources.audiofolder import AUDIO_SUFFIXES
from distilflow.sources.base import (
    BAD_METADATA,
    MISSING_FILE,
    PATH_ESCAPES_ROOT,
    MetadataRow,
    SourceError,
    SourceItem,
    item_from_row,
    jsonl_rows,
    row_problem,
)

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")  # the first one present is used
RETRY_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"})
BODY_ATTEMPTS = 3  # fetches of one object whose body stream breaks mid-read
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_STREAM_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
)
_RAW_PREVIEW = 120  # characters of a bad metadata line quoted in its detail


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix without surrounding slashes) of ``s3://bucket/prefix``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SourceError(f"{uri}: not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.strip("/")


def escapes_prefix(file_name: str) -> bool:
    """Whether a metadata ``file_name`` is absolute or climbs out with ``..``."""
    if PurePosixPath(file_name).is_absolute() or file_name.startswith("\\"):
        return True
    return ".." in file_name.replace("\\", "/").split("/")


def parse_metadata(name: str, data: bytes) -> Iterator[MetadataRow]:
    """Rows of a ``metadata.jsonl`` or ``metadata.csv`` given as bytes."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{name}: metadata is not valid UTF-8: {exc}") from exc
    if name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            yield reader.line_num, dict(row), ",".join(str(v) for v in row.values())
        return
    yield from jsonl_rows(text.splitlines())


def _unreadable(name: str, reason: str) -> Callable[[], bytes]:
    """A reader for an item that has no object to read (it carries a problem already)."""

    def read() -> bytes:
        raise SourceError(f"{name}: {reason}")

    return read


class S3Source:
    """Items of an audiofolder stored under an S3 prefix."""

    def __init__(
        self, uri: str, endpoint_url: str | None = None, language: str | None = None
    ) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.endpoint_url = endpoint_url
        self.language = language  # used when a row has no language
        self._s3: Any = None  # created on first use, so building a source needs no credentials

    # -- S3 access ---------------------------------------------------------------------------

    def _client(self) -> Any:
        """The boto3 S3 client (default credential chain, standard retries)."""
        if self._s3 is None:
            session = boto3.session.Session()
            self._s3 = session.client("s3", endpoint_url=self.endpoint_url, config=RETRY_CONFIG)
        return self._s3

    def _key(self, relative: str) -> str:
        """The object key of a name relative to the prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _list(self) -> set[str]:
        """Names (relative to the prefix) of every object under the prefix."""
        start = f"{self.prefix}/" if self.prefix else ""
        names: set[str] = set()
        try:
            pages = self._client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", []):
                    key = str(obj["Key"])
                    if not key.endswith("/"):
                        names.add(key[len(start) :])
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"{self.uri}: cannot list objects: {exc}") from exc
        return names

    def _get(self, relative: str) -> bytes:
        """The bytes of one object; raises SourceError naming it and the reason."""
        name = f"{self.uri}/{relative}"
        last: Exception | None = None
        for _ in range(BODY_ATTEMPTS):
            try:
                response = self._client().get_object(Bucket=self.bucket, Key=self._key(relative))
                data: bytes = response["Body"].read()
                return data
            except _STREAM_ERRORS as exc:
                last = exc
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _MISSING_CODES:
                    raise SourceError(f"{name}: object does not exist") from exc
                raise SourceError(f"{name}: cannot read: {exc}") from exc
            except BotoCoreError as exc:
                raise SourceError(f"{name}: cannot read: {exc}") from exc
        raise SourceError(f"{name}: read failed {BODY_ATTEMPTS} times: {last}")

    def _reader(self, relative: str) -> Callable[[], bytes]:
        """A deferred read of one object."""
        return lambda: self._get(relative)

    # -- items -------------------------------------------------------------------------------

    def _rows(self, names: set[str]) -> Iterator[MetadataRow]:
        """Rows of the first metadata file present under the prefix (none: no rows)."""
        for meta in METADATA_NAMES:
            if meta in names:
                yield from parse_metadata(f"{self.uri}/{meta}", self._get(meta))
                return

    def _item(
        self, sid: str, row: dict[str, Any], problem: str | None = None, detail: str = ""
    ) -> SourceItem:
        """An item; only problem-free or MISSING_FILE items get a reader of their object."""
        readable = problem in (None, MISSING_FILE)
        read = self._reader(sid) if readable else _unreadable(f"{self.uri}/{sid}", problem or "")
        return item_from_row(self.uri, sid, row, self.language, read, problem, detail)

    def _row_item(
        self, n: int, row: dict[str, Any] | None, raw: str, names: set[str]
    ) -> SourceItem:
        """The item a metadata row describes, with its problem if any."""
        why = row_problem(row, raw)
        if row is None or why is not None:
            detail = f"metadata line {n} {why}: {raw[:_RAW_PREVIEW]}"
            return self._item(f"metadata:{n}", {}, BAD_METADATA, detail)
        file_name = row["file_name"]
        if escapes_prefix(file_name):
            detail = f"file_name {file_name!r} points outside {self.uri}"
            return self._item(file_name, row, PATH_ESCAPES_ROOT, detail)
        if file_name not in names:
            detail = f"{file_name} is listed but does not exist"
            return self._item(file_name, row, MISSING_FILE, detail)
        return self._item(file_name, row)

    def items(self) -> Iterator[SourceItem]:
        """Metadata rows in file order, then unnamed audio objects sorted by key."""
        names = self._list()
        named: set[str] = set()
        for n, row, raw in self._rows(names):
            item = self._row_item(n, row, raw, names)
            named.add(item.source_id)
            yield item
        for name in sorted(names - named):
            if PurePosixPath(name).suffix.lower() in AUDIO_SUFFIXES:
                yield self._item(name, {})
