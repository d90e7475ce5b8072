"""A Hugging Face ``datasets`` dataset: a folder written by ``save_to_disk`` or a hub id.

``uri`` is a local folder written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk`` (read
with ``load_from_disk``), any other local data folder ``load_dataset`` understands (parquet,
csv, ...), or a hub id (``load_dataset(uri, split=..., streaming=...)``). Dataset scripts are
never run: ``trust_remote_code`` is not passed (datasets 5 no longer runs them at all).

The audio column is cast to ``Audio(decode=False)``, so nothing is decoded here (datasets 5
decodes through torchcodec, which does not load with a CPU torch): each row gives ``{"bytes",
"path"}`` and ``read()`` returns those bytes, or the file at ``path`` when the bytes are absent.
A column of raw samples (``{"array", "sampling_rate"}``) is encoded to float WAV by ``read()``.

Rows of a streamed dataset keep their audio in the item until it is read: consume ``items()``
as a stream. Rows of a map-style dataset re-read their audio by index.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import soundfile as sf
from datasets import (
    Audio,
    Dataset,
    DatasetDict,
    IterableDataset,
    load_dataset,
    load_from_disk,
)

from distilflow.sources.base import (
    BAD_METADATA,
    MISSING_FILE,
    SourceError,
    SourceItem,
    clean_text,
)

DEFAULT_TEXT_COLUMN = "sentence"
TEXT_FALLBACKS = ("text", "transcription")
LANGUAGE_FALLBACKS = ("locale",)
SPEAKER_KEYS = ("speaker", "speaker_id", "client_id")
ID_KEYS = ("id", "path")  # columns that give a stable source_id when present
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # files save_to_disk writes

AnyDataset: TypeAlias = Dataset | IterableDataset


def is_saved_dataset(uri: str) -> bool:
    """Whether ``uri`` is a local folder written by ``save_to_disk``."""
    folder = Path(uri)
    return folder.is_dir() and any((folder / name).is_file() for name in SAVED_MARKERS)


def _first_present(row: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The cleaned value of the first of ``keys`` that is a column of ``row``."""
    for key in keys:
        if key in row:
            return clean_text(row[key])
    return None


def _encode_wav(value: Mapping[str, Any], name: str) -> bytes:
    """Raw samples ``{"array", "sampling_rate"}`` as float32 WAV bytes (lossless)."""
    try:
        samples = np.asarray(value["array"], dtype=np.float32)
        buffer = io.BytesIO()
        sf.write(buffer, samples, int(value["sampling_rate"]), format="WAV", subtype="FLOAT")
    except (TypeError, ValueError, RuntimeError, sf.LibsndfileError) as exc:
        raise SourceError(f"{name}: cannot encode raw samples as WAV: {exc}") from exc
    return buffer.getvalue()


def _read_path(path: str, name: str) -> bytes:
    """The bytes of a local file or an fsspec URL (``hf://``, ``https://``, ...)."""
    try:
        if "://" in path:
            import fsspec  # a datasets dependency; only needed for remote paths

            with fsspec.open(path, "rb") as fh:
                data: bytes = fh.read()
                return data
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise SourceError(f"{name}: audio file {path} does not exist") from exc
    except OSError as exc:
        raise SourceError(f"{name}: cannot read {path}: {exc}") from exc


class HFDatasetSource:
    """Items of one split of a Hugging Face dataset."""

    def __init__(
        self,
        uri: str,
        split: str = "train",
        audio_column: str = "audio",
        text_column: str | None = DEFAULT_TEXT_COLUMN,
        language_column: str | None = "language",
        language: str | None = None,
        streaming: bool = True,
    ) -> None:
        self.uri = str(uri)
        self.split = split
        self.audio_column = audio_column
        first = text_column or DEFAULT_TEXT_COLUMN  # None: the default column
        self.text_keys = (first, *(k for k in TEXT_FALLBACKS if k != first))
        self.language_keys: tuple[str, ...] = (
            (language_column, *LANGUAGE_FALLBACKS) if language_column else ()
        )
        self.language = language  # used when a row has no language
        self.streaming = streaming

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> AnyDataset:
        """The split, loaded from disk or through ``load_dataset``; errors become SourceError."""
        try:
            if is_saved_dataset(self.uri):
                loaded: object = load_from_disk(self.uri)
            else:
                loaded = load_dataset(self.uri, split=self.split, streaming=self.streaming)
        except Exception as exc:  # datasets raises many types: name the source, keep the cause
            raise SourceError(f"{self.uri}: cannot load split {self.split!r}: {exc}") from exc
        if isinstance(loaded, DatasetDict):
            if self.split not in loaded:
                splits = ", ".join(sorted(loaded))
                raise SourceError(f"{self.uri}: no split {self.split!r} (has {splits})")
            loaded = loaded[self.split]
        if not isinstance(loaded, Dataset | IterableDataset):
            raise SourceError(f"{self.uri}: unexpected dataset type {type(loaded).__name__}")
        return self._undecoded(loaded)

    def _undecoded(self, ds: AnyDataset) -> AnyDataset:
        """``ds`` with its audio column as undecoded ``{"bytes", "path"}``."""
        columns = ds.column_names
        if columns is not None and self.audio_column not in columns:
            raise SourceError(
                f"{self.uri}: no audio column {self.audio_column!r} (has {', '.join(columns)})"
            )
        feature = ds.features.get(self.audio_column) if ds.features else None
        if isinstance(feature, Audio) and feature.decode:
            ds = ds.cast_column(self.audio_column, Audio(decode=False))
        return ds

    # -- one row -----------------------------------------------------------------------------

    def _local_path(self, path: str) -> Path | None:
        """A local file path for ``path`` (relative ones against a local ``uri``), or None."""
        if "://" in path:
            return None
        candidate = Path(path)
        if not candidate.is_absolute() and Path(self.uri).is_dir():
            candidate = Path(self.uri) / candidate
        return candidate

    def _audio_problem(self, value: object) -> tuple[str, str] | None:
        """(reason, detail) when a row's audio value cannot be read, else None."""
        if isinstance(value, bytes | bytearray):
            return None if value else (BAD_METADATA, "the audio bytes are empty")
        if isinstance(value, str):
            value = {"bytes": None, "path": value}
        if not isinstance(value, Mapping):
            return BAD_METADATA, f"the audio is {type(value).__name__}, not bytes, path or array"
        if "array" in value:
            if value.get("array") is None or not value.get("sampling_rate"):
                return BAD_METADATA, "raw audio without samples or sampling_rate"
            return None
        if value.get("bytes"):
            return None
        path = value.get("path")
        if not isinstance(path, str) or not path:
            return BAD_METADATA, "the audio has neither bytes nor a path"
        local = self._local_path(path)
        if local is not None and not local.is_file():
            return MISSING_FILE, f"audio file {path} does not exist"
        return None

    def _audio_bytes(self, value: object, name: str) -> bytes:
        """The encoded audio of a row's audio value; raises SourceError."""
        if isinstance(value, bytes | bytearray) and value:
            return bytes(value)
        if isinstance(value, str):
            value = {"bytes": None, "path": value}
        if isinstance(value, Mapping):
            if "array" in value:
                return _encode_wav(value, name)
            if value.get("bytes"):
                return bytes(value["bytes"])
            path = value.get("path")
            if isinstance(path, str) and path:
                local = self._local_path(path)
                return _read_path(str(local) if local is not None else path, name)
        raise SourceError(f"{name}: the row has no readable audio")

    def _reader(self, ds: AnyDataset, index: int, value: object, name: str) -> Callable[[], bytes]:
        """A deferred read: map-style rows re-read by index, streamed rows keep ``value``."""

        def read() -> bytes:
            if isinstance(ds, Dataset):
                return self._audio_bytes(ds[index][self.audio_column], name)
            return self._audio_bytes(value, name)

        return read

    def _source_id(self, row: Mapping[str, Any], index: int) -> str:
        """The row's ``id`` or ``path`` column when set, else ``<split>/<row index>``."""
        for key in ID_KEYS:
            if key != self.audio_column and key in row:
                value = clean_text(row[key])
                if value is not None:
                    return value
        return f"{self.split}/{index}"

    def _item(self, ds: AnyDataset, index: int, row: Mapping[str, Any]) -> SourceItem:
        """The item of one row."""
        sid = self._source_id(row, index)
        name = f"{self.uri}/{sid}"
        value = row.get(self.audio_column)
        found = self._audio_problem(value)
        problem, detail = found if found is not None else (None, "")
        return SourceItem(
            source=self.uri,
            source_id=sid,
            language=_first_present(row, self.language_keys) or self.language,
            text=_first_present(row, self.text_keys),
            speaker=_first_present(row, SPEAKER_KEYS),
            read=self._reader(ds, index, None if isinstance(ds, Dataset) else value, name),
            problem=problem,
            detail=f"{sid}: {detail}" if detail else "",
        )

    def items(self) -> Iterator[SourceItem]:
        """Every row of the split, in dataset order."""
        ds = self._load()
        row: Mapping[str, Any]
        for index, row in enumerate(ds):
            yield self._item(ds, index, row)
