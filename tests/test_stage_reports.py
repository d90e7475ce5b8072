"""The stages' typed reports: each reads back equal, and writes the very bytes the stage wrote
when its report was a dict (the dicts below are what the old code built for the same input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from distilflow.atomic import atomic_write_json
from distilflow.config import LabelConfig, section_hash
from distilflow.export.report import (
    ExportVerification,
    FasterWhisperCheck,
    FasterWhisperMissing,
    read_verification,
)
from distilflow.filter.report import FilterReport
from distilflow.filter.stage import summarise
from distilflow.ingest.report import IngestReport
from distilflow.ingest.stage import Outcome, build_report
from distilflow.label.cache import LabelCache, LabelRecord
from distilflow.label.report import LabelReport
from distilflow.lineage import Lineage, combine_hashes
from distilflow.manifest import ManifestRow, write_manifests

LINEAGE = Lineage("abc123", "params1", "input1")
LINEAGE_DICT = {
    "git_commit": "abc123",
    "params_hash": "params1",
    "input_hash": "input1",
    "teacher_id": None,
}


def assert_written_as(path: Path, expected: dict[str, Any], tmp_path: Path) -> None:
    """``path`` holds the bytes ``atomic_write_json`` writes for ``expected``."""
    old = tmp_path / "old.json"
    atomic_write_json(old, expected)
    assert path.read_bytes() == old.read_bytes()


def outcome(language: str | None, status: str, duration_s: float | None = None) -> Outcome:
    return Outcome(
        "src", f"{language}-{status}", "b", "t", language, None, "r", status, "", None, duration_s
    )


def test_ingest_report(tmp_path: Path) -> None:
    outcomes = [
        outcome("en", "kept", 3600.0),
        outcome("en", "kept", 1800.5),
        outcome("en", "silent", 2.0),
        outcome(None, "kept", 10.0),
        outcome("xx", "unknown_language"),
        outcome("fr", "too_long", 99.0),
        outcome("fr", "empty"),
    ]
    report = build_report(outcomes, LINEAGE)
    expected = {
        "input": 7,
        "kept": 3,
        "quarantined": 4,
        "by_reason": {"empty": 1, "silent": 1, "too_long": 1, "unknown_language": 1},
        "by_language": {
            "en": {"kept": 2, "quarantined": {"silent": 1}, "hours_kept": 1.5001},
            "fr": {"kept": 0, "quarantined": {"empty": 1, "too_long": 1}, "hours_kept": 0.0},
            "und": {"kept": 1, "quarantined": {}, "hours_kept": 0.0028},
            "xx": {"kept": 0, "quarantined": {"unknown_language": 1}, "hours_kept": 0.0},
        },
        "lineage": LINEAGE_DICT,
    }
    assert report.to_dict() == expected and list(report.to_dict()) == list(expected)
    path = tmp_path / "report.json"
    assert report.write(path) and not report.write(path)  # unchanged: not rewritten
    assert_written_as(path, expected, tmp_path)
    assert IngestReport.read(path) == report


def label_config(out: Path) -> LabelConfig:
    return LabelConfig(
        model="tiny-teacher",
        backend="transformers",
        device="cpu",
        batch_size=2,
        shard_size=10,
        max_new_tokens=4,
        num_beams=1,
        timestamps=False,
        detect_language=True,
        cache_encoder=False,
        out_dir=str(out),
        progress=False,
    )


def label_inputs(tmp_path: Path) -> tuple[Path, LabelCache]:
    """Manifests of three clips (one without a language), and the teacher's labels of two."""
    rows = [
        ManifestRow(h[:16], h, f"audio/{h}.flac", lang, "ref", 1.0, "src", h, None)
        for h, lang in (("a" * 64, "en"), ("b" * 64, None), ("c" * 64, "en"))
    ]
    ingest_root = tmp_path / "ingest"
    write_manifests(ingest_root, rows, LINEAGE)
    cache = LabelCache(tmp_path / "labels" / "cache", "teacher-fp", "settings")
    records = [
        LabelRecord(h, lang, detected, "hi", [1], -0.1, 1.0, 0.0, "teacher-fp", "settings")
        for h, lang, detected in (("a" * 64, "en", False), ("b" * 64, "fr", True))
    ]
    cache.write_batch(records)
    return ingest_root, cache


def test_label_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilflow.label.stage import write_labels

    monkeypatch.setattr("distilflow.label.stage.git_commit", lambda: "abc123")
    ingest_root, cache = label_inputs(tmp_path)
    cfg = label_config(tmp_path / "labels")
    report = write_labels(ingest_root, cache, cfg, "teacher-fp")
    expected = {
        "clips": 3,
        "labelled": 2,
        "by_language": {"en": 1, "fr": 1},
        "language_detected": {"fr": 1},
        "teacher": {"model": "tiny-teacher", "id": "teacher-fp", "backend": "transformers"},
        "lineage": {
            "git_commit": "abc123",
            "params_hash": section_hash(cfg),
            "input_hash": combine_hashes(["a" * 64, "b" * 64]),
            "teacher_id": "teacher-fp",
        },
    }
    assert report.to_dict() == expected and list(report.to_dict()) == list(expected)
    path = tmp_path / "labels" / "report.json"
    assert_written_as(path, expected, tmp_path)
    assert LabelReport.read(path) == report


def test_filter_report(tmp_path: Path) -> None:
    decisions = pd.DataFrame(
        {
            "language": ["en", "en", "en", "ru", "en", "en"],
            "status": [
                "kept", "kept", "wer_above_threshold", "empty_reference", "no_speech",
                "repetition_loop",
            ],
            "error": [0.1, 0.2, 0.9, float("nan"), float("nan"), float("nan")],
            # the third clip's and the loop's references are usable: kept for them
            "kept": [True, True, True, False, False, True],
        }
    )  # fmt: skip
    report = summarise(decisions, LINEAGE)
    expected = {
        "input": 6,
        "kept": 4,
        "dropped": 2,
        "by_language": {
            "en": {
                "input": 5,
                "kept": 4,
                "dropped": {"no_speech": 1},
                "mean_error": 0.4,
                "mean_error_kept": 0.15,
                "reference_only": {"repetition_loop": 1, "wer_above_threshold": 1},
            },
            "ru": {
                "input": 1,
                "kept": 0,
                "dropped": {"empty_reference": 1},
                "mean_error": None,
                "mean_error_kept": None,
                "reference_only": {},
            },
        },
        "lineage": LINEAGE_DICT,
    }
    assert report.to_dict() == expected and list(report.to_dict()) == list(expected)
    path = tmp_path / "report.json"
    report.write(path)
    assert_written_as(path, expected, tmp_path)
    assert FilterReport.read(path) == report


PER_CLIP = [
    {
        "id": "a",
        "language": "fr",
        "torch_text": "bonjour le monde",
        "ct2_text": "bonjour le monde",
        "torch_tokens": [1, 2, 3],
        "ct2_tokens": [1, 2, 3],
        "token_agreement": 1.0,
    },
    {
        "id": "b",
        "language": "fr",
        "torch_text": "bonne nuit",
        "ct2_text": "bonne chance",
        "torch_tokens": [4, 5],
        "ct2_tokens": [4, 6],
        "token_agreement": 0.5,
    },
]


def test_export_verification(tmp_path: Path) -> None:
    from distilflow.export.verify import ClipComparison, VerifyReport

    comparisons = [
        ClipComparison("a", "fr", "bonjour le monde", "bonjour le monde", [1, 2, 3], [1, 2, 3]),
        ClipComparison("b", "fr", "bonne nuit", "bonne chance", [4, 5], [4, 6]),
    ]
    fw = FasterWhisperCheck(True, 2, 0.5, 1.0, ["bonjour le monde", "bonne nuit"])
    report = ExportVerification.of(VerifyReport(comparisons, 10), "fr", "int8", fw)
    expected = {
        "clips": 2,
        "identical_tokens_share": 0.5,
        "exact_text_share": 0.5,
        "mean_token_agreement": 0.75,
        "wer_vs_torch": 0.2,
        "torch_loop_clips": 0,
        "export_loop_clips": 0,
        "export_loop_share": 0.0,
        "wer_vs_torch_settled": 0.2,
        "max_new_tokens": 10,
        "per_clip": PER_CLIP,
        "language": "fr",
        "quantization": "int8",
        "faster_whisper": {
            "installed": True,
            "clips": 2,
            "same_text_as_ctranslate2_share": 0.5,
            "same_normalised_text_as_ctranslate2_share": 1.0,
            "texts": ["bonjour le monde", "bonne nuit"],
        },
    }
    assert report.to_dict() == expected and list(report.to_dict()) == list(expected)
    assert list(report.faster_whisper.to_dict()) == list(expected["faster_whisper"])
    path = tmp_path / "verification.json"
    report.write(path)
    assert_written_as(path, expected, tmp_path)
    assert read_verification(path) == report
    missing = ExportVerification.of(
        VerifyReport([], 10), None, "int8", FasterWhisperMissing(False, "no faster_whisper")
    )
    missing.write(path)
    assert read_verification(path) == missing
    assert missing.to_dict()["faster_whisper"] == {"installed": False, "error": "no faster_whisper"}
