"""Manifests: one Parquet file per language listing the clips a stage keeps.

Paths in a manifest are relative to the directory that holds the ``manifests/`` folder, so a
stage's output directory can be moved or pulled from a DVC remote as a whole.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from distilflow.atomic import atomic_write_bytes
from distilflow.lineage import Lineage, combine_hashes

LINEAGE_KEY = b"distilflow.lineage"
UNDETERMINED = "und"  # manifest name for clips whose language is not known yet

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # short clip id: first 16 hex of hash
        pa.field("hash", pa.string(), nullable=False),  # sha256 of 16 kHz int16 PCM
        pa.field("path", pa.string(), nullable=False),  # FLAC in the store, relative to root
        pa.field("language", pa.string(), nullable=True),  # ISO 639-1, null = undetermined
        pa.field("text", pa.string(), nullable=True),  # reference transcript, null = unlabelled
        pa.field("duration_s", pa.float64(), nullable=False),  # seconds at 16 kHz
        pa.field("source", pa.string(), nullable=False),  # source URI as configured
        pa.field("source_id", pa.string(), nullable=False),  # id inside that source
        pa.field("speaker", pa.string(), nullable=True),
    ]
)


@dataclass(frozen=True)
class ManifestRow:
    """One kept clip."""

    id: str
    hash: str
    path: str
    language: str | None
    text: str | None
    duration_s: float
    source: str
    source_id: str
    speaker: str | None


def table_bytes(table: pa.Table, lineage: Lineage | None) -> bytes:
    """Serialise a table to Parquet bytes, with lineage in the schema metadata."""
    if lineage is not None:
        meta = dict(table.schema.metadata or {})
        meta[LINEAGE_KEY] = json.dumps(lineage.to_dict(), sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(path: Path, table: pa.Table, lineage: Lineage | None) -> bool:
    """Atomically write a Parquet file with lineage. Returns True when it changed."""
    return atomic_write_bytes(path, table_bytes(table, lineage))


def read_lineage(path: Path) -> dict[str, Any] | None:
    """The lineage a Parquet artifact was written with, or None."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(LINEAGE_KEY)
    return json.loads(raw) if raw else None


def manifest_table(rows: list[ManifestRow]) -> pa.Table:
    """Rows -> Arrow table with the manifest schema, sorted by id for stable bytes."""
    ordered = sorted(rows, key=lambda r: r.id)
    columns = {f.name: [getattr(r, f.name) for r in ordered] for f in MANIFEST_SCHEMA}
    return pa.table(columns, schema=MANIFEST_SCHEMA)


def manifest_path(root: Path, language: str | None) -> Path:
    return root / "manifests" / f"{language or UNDETERMINED}.parquet"


def per_language(lineage: Lineage, hashes: Iterable[str]) -> Lineage:
    """A language's table carries the hash of its own clips, not the whole stage input: new
    clips of one language then leave every other language's file byte-identical (and DVC sees
    no change downstream of them)."""
    return dataclasses.replace(lineage, input_hash=combine_hashes(hashes))


def write_manifests(
    root: Path, rows: list[ManifestRow], lineage: Lineage, languages: list[str] | None = None
) -> dict[str, int]:
    """Write one manifest per language (also for ``languages`` with no rows); drop stale ones.

    Returns the row count per manifest name.
    """
    by_lang: dict[str, list[ManifestRow]] = {lang: [] for lang in languages or []}
    for row in rows:
        by_lang.setdefault(row.language or UNDETERMINED, []).append(row)
    for name, lang_rows in by_lang.items():
        own = per_language(lineage, [r.hash for r in lang_rows])
        write_parquet(root / "manifests" / f"{name}.parquet", manifest_table(lang_rows), own)
    for stale in (root / "manifests").glob("*.parquet"):
        if stale.stem not in by_lang:
            stale.unlink()
    return {name: len(r) for name, r in sorted(by_lang.items())}


def read_manifest(root: Path, language: str | None = None) -> pd.DataFrame:
    """Read the manifest of one language (or all of them), with ``audio_path`` made absolute."""
    paths = (
        [manifest_path(root, language)]
        if language is not None
        else sorted((root / "manifests").glob("*.parquet"))
    )
    frames = [pq.read_table(p, schema=MANIFEST_SCHEMA).to_pandas() for p in paths if p.exists()]
    if not frames:
        return MANIFEST_SCHEMA.empty_table().to_pandas()
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df["audio_path"] = [str((root / p).resolve()) for p in df["path"]]
    return df


def write_language_tables(
    directory: Path, df: pd.DataFrame, root: Path, languages: Iterable[str], lineage: Lineage
) -> dict[str, int]:
    """One Parquet file per language in ``directory`` (also languages without rows); stale removed.

    ``df`` carries an absolute ``audio_path``; it is stored as ``path`` relative to ``root`` (the
    stage's output directory), rows sorted by id. Returns the row count per language.
    """
    stored = df.drop(columns=["audio_path"]).assign(
        path=[os.path.relpath(p, root.resolve()) for p in df["audio_path"]]
    )
    counts: dict[str, int] = {}
    for lang in sorted(set(languages)):
        part = stored[stored["language"] == lang].sort_values("id").reset_index(drop=True)
        table = pa.Table.from_pandas(part, preserve_index=False)
        write_parquet(directory / f"{lang}.parquet", table, per_language(lineage, part["hash"]))
        counts[lang] = len(part)
    for stale in directory.glob("*.parquet"):
        if stale.stem not in counts:
            stale.unlink()
    return counts


def read_language_tables(
    directory: Path, root: Path, languages: list[str] | None = None
) -> pd.DataFrame:
    """The tables ``write_language_tables`` wrote (all, or ``languages``), ``audio_path`` absolute.

    A requested language without a file is an error; empty files give no rows.
    """
    if languages is None:
        paths = sorted(directory.glob("*.parquet"))
    else:
        paths = [directory / f"{lang}.parquet" for lang in sorted(set(languages))]
        absent = [p.stem for p in paths if not p.exists()]
        if absent:
            raise FileNotFoundError(f"{directory}: no table for {', '.join(absent)}")
    frames = [f for f in (pd.read_parquet(p) for p in paths) if len(f)]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df["audio_path"] = [str((root / p).resolve()) for p in df["path"]]
    return df
