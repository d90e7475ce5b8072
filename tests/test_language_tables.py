"""Per-language stage tables: relative paths on disk, absolute on read, stale languages removed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from distilflow.lineage import Lineage
from distilflow.manifest import read_language_tables, read_lineage, write_language_tables

LINEAGE = Lineage("c0ffee", "p", "i", "t")


def frame(tmp_path: Path, langs: list[str]) -> pd.DataFrame:
    audio = tmp_path / "store" / "a.flac"
    audio.parent.mkdir(parents=True, exist_ok=True)
    audio.write_bytes(b"x")
    return pd.DataFrame(
        {
            "id": [f"{i}" for i in range(len(langs))],
            "hash": [f"h{i}" for i in range(len(langs))],
            "language": langs,
            "path": ["ignored"] * len(langs),
            "audio_path": [str(audio)] * len(langs),
        }
    )


def test_round_trip_and_stale_removal(tmp_path: Path) -> None:
    root = tmp_path / "stage"
    tables = root / "manifests"
    counts = write_language_tables(
        tables, frame(tmp_path, ["fr", "en", "fr"]), root, ["en", "fr", "it"], LINEAGE
    )
    assert counts == {"en": 1, "fr": 2, "it": 0}
    stored = pd.read_parquet(tables / "fr.parquet")
    assert stored["path"].tolist() == ["../store/a.flac"] * 2 and "audio_path" not in stored
    assert read_lineage(tables / "fr.parquet")["git_commit"] == "c0ffee"
    back = read_language_tables(tables, root)
    assert len(back) == 3 and set(back["audio_path"]) == {
        str((tmp_path / "store" / "a.flac").resolve())
    }
    # each language's lineage hashes its own clips: more French leaves en.parquet byte-identical
    en_before = (tables / "en.parquet").read_bytes()
    write_language_tables(
        tables, frame(tmp_path, ["fr", "en", "fr", "fr"]), root, ["en", "fr", "it"], LINEAGE
    )
    assert (tables / "en.parquet").read_bytes() == en_before
    assert (
        read_lineage(tables / "fr.parquet")["input_hash"]
        != read_lineage(tables / "en.parquet")["input_hash"]
    )
    write_language_tables(tables, frame(tmp_path, ["en"]), root, ["en"], LINEAGE)
    assert sorted(p.stem for p in tables.glob("*.parquet")) == ["en"]  # fr and it were stale
    with pytest.raises(FileNotFoundError, match="no table for fr"):
        read_language_tables(tables, root, ["fr"])
    assert read_language_tables(tmp_path / "absent", root).empty
