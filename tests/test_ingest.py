"""Ingestion: every bad-input kind lands in quarantine with its reason; counts add up."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from distilflow import audio
from distilflow.config import IngestConfig, SourceConfig
from distilflow.ingest.stage import check_language, check_samples, ingest, resolve_duplicates
from distilflow.manifest import read_lineage, read_manifest
from distilflow.sources import iter_items

from .helpers import DEMO_CORPUS, audio_bytes, tone, write_audiofolder


def config(src: Path, out: Path, **kw: object) -> IngestConfig:
    base = IngestConfig(
        sources=[SourceConfig(kind="audiofolder", uri=str(src))],
        out_dir=str(out),
        max_duration_s=30.0,
        min_duration_s=0.05,
        silence_peak=0.0,
        languages=["en", "fr"],
        progress=False,
    )
    return dataclasses.replace(base, **kw)


def run(cfg: IngestConfig):
    return ingest(iter_items(cfg.sources), cfg)


def quarantine(out: Path) -> dict[str, dict]:
    lines = (out / "quarantine" / "quarantine.jsonl").read_text().splitlines()
    return {r["source_id"]: r for r in map(json.loads, lines)}


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A folder with one good clip of each language and one of every bad kind."""
    nan = tone(1.0)
    nan[100] = np.nan
    entries = [
        {
            "file_name": "good_en.wav",
            "bytes": audio_bytes(tone(1.0)),
            "text": "hello",
            "language": "en",
        },
        {
            "file_name": "good_fr.flac",
            "bytes": audio_bytes(tone(1.5, freq=300), fmt="FLAC"),
            "text": "bonjour",
            "language": "French",
        },
        {
            "file_name": "stereo_44k.wav",
            "bytes": audio_bytes(np.stack([tone(2.0, 44_100), tone(2.0, 44_100)], 1), 44_100),
            "text": "stereo",
            "language": "en",
        },
        {
            "file_name": "unlabelled.wav",
            "bytes": audio_bytes(tone(1.0, freq=500)),
            "language": "en",
        },
        {
            "file_name": "corrupt.wav",
            "bytes": b"RIFF\x00\x00garbage-not-audio",
            "text": "x",
            "language": "en",
        },
        {"file_name": "empty.wav", "bytes": b"", "text": "x", "language": "en"},
        {
            "file_name": "zero_samples.wav",
            "bytes": audio_bytes(np.zeros(0, np.float32)),
            "text": "x",
            "language": "en",
        },
        {
            "file_name": "silent.wav",
            "bytes": audio_bytes(np.zeros(16_000, np.float32)),
            "text": "x",
            "language": "en",
        },
        {
            "file_name": "nan.wav",
            "bytes": audio_bytes(nan, subtype="FLOAT"),
            "text": "x",
            "language": "en",
        },
        {
            "file_name": "long.flac",
            "bytes": audio_bytes(tone(31.0), fmt="FLAC"),
            "text": "x",
            "language": "en",
        },
        {
            "file_name": "klingon.wav",
            "bytes": audio_bytes(tone(1.0, freq=700)),
            "text": "x",
            "language": "tlh",
        },
        {
            "file_name": "german.wav",
            "bytes": audio_bytes(tone(1.0, freq=800)),
            "text": "hallo",
            "language": "de",
        },
        {"file_name": "../escape.wav", "text": "x", "language": "en"},
        {"file_name": "missing.wav", "text": "x", "language": "en"},
        {
            "file_name": "copy_of_good_en.wav",
            "bytes": audio_bytes(tone(1.0)),
            "text": "hello",
            "language": "en",
        },
        {"file_name": "good_en.wav", "text": "a different transcript", "language": "en"},
    ]
    root = write_audiofolder(tmp_path / "src", entries)
    (tmp_path / "escape.wav").write_bytes(audio_bytes(tone(1.0, freq=900)))  # outside the root
    with (root / "metadata.jsonl").open("a") as fh:
        fh.write("{not json\n")
    (root / "orphan.wav").write_bytes(audio_bytes(tone(1.2, freq=1000)))  # no metadata row
    return root


EXPECTED_QUARANTINE = {
    "corrupt.wav": "unreadable",
    "empty.wav": "empty",
    "zero_samples.wav": "empty",
    "silent.wav": "silent",
    "nan.wav": "non_finite",
    "long.flac": "too_long",
    "klingon.wav": "unknown_language",
    "german.wav": "language_not_selected",
    "../escape.wav": "path_escapes_root",
    "missing.wav": "missing_file",
    "copy_of_good_en.wav": "duplicate",
    "metadata:17": "bad_metadata",
}


def test_every_bad_kind_is_quarantined_with_its_reason(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(config(messy, out))
    q = quarantine(out)
    for source_id, reason in EXPECTED_QUARANTINE.items():
        assert q[source_id]["reason"] == reason, (source_id, q.get(source_id))
        assert q[source_id]["detail"]
    # the second good_en.wav row (same id, other text) conflicts
    conflicts = [
        r
        for r in map(json.loads, (out / "quarantine/quarantine.jsonl").read_text().splitlines())
        if r["reason"] == "duplicate_id_conflict"
    ]
    assert [c["source_id"] for c in conflicts] == ["good_en.wav"]
    report = result.report
    assert report.input == 18 == report.kept + report.quarantined
    assert report.kept == 5  # good_en, good_fr, stereo, unlabelled, orphan
    assert sum(report.by_reason.values()) == report.quarantined == len(EXPECTED_QUARANTINE) + 1
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report.to_dict()


def test_quarantined_bytes_are_kept(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(config(messy, out))
    q = quarantine(out)
    corrupt = out / q["corrupt.wav"]["copy"]
    assert corrupt.read_bytes() == (messy / "corrupt.wav").read_bytes()
    assert q["../escape.wav"]["copy"] is None  # never read: it lies outside the source


def test_manifests_store_and_lineage(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(config(messy, out))
    assert sorted(p.stem for p in (out / "manifests").glob("*.parquet")) == ["en", "fr", "und"]
    en = read_manifest(out, "en").set_index("source_id")
    assert set(en.index) == {"good_en.wav", "stereo_44k.wav", "unlabelled.wav"}
    assert pd.isna(en.loc["unlabelled.wav", "text"])  # kept, unlabelled
    und = read_manifest(out, "und")  # no language given: the teacher detects it later
    assert und["source_id"].tolist() == ["orphan.wav"] and pd.isna(und["language"][0])
    stereo = en.loc["stereo_44k.wav"]
    assert stereo["duration_s"] == pytest.approx(2.0, abs=1e-3)
    samples, sr = sf.read(stereo["audio_path"], dtype="int16")
    assert sr == 16_000 and samples.ndim == 1
    assert audio.pcm_hash(samples) == stereo["hash"] and stereo["id"] == stereo["hash"][:16]
    fr = read_manifest(out, "fr")
    assert fr["language"].tolist() == ["fr"]  # "French" normalised to its code
    lineage = read_lineage(out / "manifests" / "en.parquet")
    assert lineage is not None and set(lineage) >= {"git_commit", "params_hash", "input_hash"}


def test_rerun_does_no_work_and_new_files_only_are_processed(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = config(messy, out)
    first = run(cfg)
    assert first.decoded > 0
    second = run(cfg)
    assert second.decoded == 0 and not second.changed
    assert second.report == first.report
    (messy / "new_fr.wav").write_bytes(audio_bytes(tone(0.8, freq=1200)))
    third = run(cfg)
    assert third.decoded == 1  # only the new file
    assert third.report.input == first.report.input + 1
    assert third.report.kept == first.report.kept + 1


def test_changed_rules_reexamine(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(config(messy, out))
    stricter = run(config(messy, out, max_duration_s=1.1))
    assert stricter.decoded > 0
    q = quarantine(out)
    assert q["stereo_44k.wav"]["reason"] == "too_long"


def test_duplicates_across_sources_collapse(messy: Path, tmp_path: Path) -> None:
    other = write_audiofolder(
        tmp_path / "other",
        [
            {
                "file_name": "same.wav",
                "bytes": audio_bytes(tone(1.0)),
                "text": "hello",
                "language": "en",
            }
        ],
    )
    cfg = config(messy, tmp_path / "out")
    cfg = dataclasses.replace(
        cfg, sources=[*cfg.sources, SourceConfig(kind="audiofolder", uri=str(other))]
    )
    report = run(cfg).report
    assert report.by_reason["duplicate"] == 2
    assert report.input == report.kept + report.quarantined


def test_killed_write_leaves_no_partial_file(messy: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("distilflow.atomic.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        run(config(messy, out))
    assert not list(out.rglob("*.flac")) and not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    assert run(config(messy, out)).report.kept == 5


def test_rules_are_pure() -> None:
    cfg = config(Path("."), Path("."))
    assert check_samples(np.zeros(0, np.float32), cfg)[0] == "empty"
    assert check_samples(np.full(16_000, np.inf, np.float32), cfg)[0] == "non_finite"
    assert check_samples(np.zeros(16_000, np.float32), cfg)[0] == "silent"
    assert check_samples(tone(0.5), cfg)[0] == "kept"
    assert check_language("pt-BR", dataclasses.replace(cfg, languages=[]))[:2] == ("pt", "kept")
    assert check_language(None, cfg)[1] == "kept"
    assert check_language("xx", cfg)[1] == "unknown_language"
    assert resolve_duplicates([]) == []


def test_demo_corpus_ingests_whole(tmp_path: Path) -> None:
    cfg = config(DEMO_CORPUS, tmp_path / "out", languages=["en", "es", "fr", "it", "ru"])
    report = run(cfg).report
    assert report.kept == 150 and report.quarantined == 0
    assert {lang: row.kept for lang, row in report.by_language.items()} == dict.fromkeys(
        ["en", "es", "fr", "it", "ru"], 30
    )
