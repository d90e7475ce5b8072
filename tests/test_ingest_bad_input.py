"""Bad inputs a probe found counted wrongly: each is one input, quarantined once, with a reason
naming what is wrong, and the report's counts add up (input == kept + quarantined)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from distilflow.config import IngestConfig, SourceConfig
from distilflow.ingest.stage import MIN_SAMPLE_RATE, IngestResult, check_sample_rate, ingest
from distilflow.sources import iter_items
from distilflow.sources.audiofolder import AudioFolderSource
from distilflow.sources.base import row_problem

from .helpers import audio_bytes, tone, write_audiofolder


def config(src: Path, out: Path) -> IngestConfig:
    return IngestConfig(
        sources=[SourceConfig(kind="audiofolder", uri=str(src))],
        out_dir=str(out),
        max_duration_s=30.0,
        min_duration_s=0.05,
        silence_peak=0.0,
        languages=[],
        progress=False,
    )


def run(src: Path, out: Path) -> IngestResult:
    cfg = config(src, out)
    return ingest(iter_items(cfg.sources), cfg)


def quarantine(out: Path) -> list[dict[str, str]]:
    lines = (out / "quarantine" / "quarantine.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def good(name: str, freq: float) -> dict[str, object]:
    return {"file_name": name, "bytes": audio_bytes(tone(1.0, freq=freq)), "text": name}


def assert_adds_up(result: IngestResult, inputs: int) -> None:
    report = result.report
    assert report.input == inputs == report.kept + report.quarantined
    assert sum(report.by_reason.values()) == report.quarantined
    per_language = sum(r.kept + sum(r.quarantined.values()) for r in report.by_language.values())
    assert per_language == inputs


# --- a symlink that points outside the source root -----------------------------------------


def test_listed_symlink_out_of_the_root_counts_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside.wav"
    outside.write_bytes(audio_bytes(tone(1.0, freq=900)))
    src = write_audiofolder(
        tmp_path / "src",
        [good("a.wav", 300), {"file_name": "link.wav", "text": "through a link"}],
    )
    (src / "link.wav").symlink_to(outside)
    items = list(AudioFolderSource(src).items())
    assert [(i.source_id, i.problem) for i in items] == [
        ("a.wav", None),
        ("link.wav", "path_escapes_root"),
    ]
    out = tmp_path / "out"
    result = run(src, out)
    assert_adds_up(result, 2)
    assert result.report.by_reason == {"path_escapes_root": 1}
    [q] = quarantine(out)
    assert (q["source_id"], q["reason"], q["copy"]) == ("link.wav", "path_escapes_root", None)


def test_unlisted_symlink_out_of_the_root_is_quarantined_unread(tmp_path: Path) -> None:
    outside = tmp_path / "outside.wav"
    outside.write_bytes(audio_bytes(tone(1.0, freq=900)))
    src = write_audiofolder(tmp_path / "src", [good("a.wav", 300)])
    (src / "stray.wav").symlink_to(outside)  # no metadata row names it
    out = tmp_path / "out"
    result = run(src, out)
    assert_adds_up(result, 2)
    assert result.report.by_reason == {"path_escapes_root": 1}
    [q] = quarantine(out)
    assert (q["source_id"], q["reason"], q["copy"]) == ("stray.wav", "path_escapes_root", None)
    assert str(outside) in q["detail"]


def test_symlink_inside_the_root_counts_once(tmp_path: Path) -> None:
    src = write_audiofolder(tmp_path / "src", [good("a.wav", 300)])
    (src / "alias.wav").symlink_to(src / "a.wav")
    with (src / "metadata.jsonl").open("a") as fh:
        fh.write(json.dumps({"file_name": "alias.wav", "text": "alias"}) + "\n")
    result = run(src, tmp_path / "out")
    assert_adds_up(result, 2)
    assert result.report.by_reason == {"duplicate": 1}  # same audio as a.wav, nothing else


# --- a metadata line that is not JSON ------------------------------------------------------


def test_metadata_line_that_is_not_json(tmp_path: Path) -> None:
    src = write_audiofolder(tmp_path / "src", [good("a.wav", 300)])
    with (src / "metadata.jsonl").open("a") as fh:
        fh.write('{"file_name": "b.wav", "text": oops}\n')  # line 2
        fh.write('["b.wav"]\n')  # line 3: JSON, not an object
        fh.write('{"text": "no file"}\n')  # line 4
    out = tmp_path / "out"
    result = run(src, out)
    assert_adds_up(result, 4)
    assert result.report.by_reason == {"bad_metadata": 3}
    details = {q["source_id"]: q["detail"] for q in quarantine(out)}
    assert set(details) == {"metadata:2", "metadata:3", "metadata:4"}
    assert details["metadata:2"].startswith("line 2 is not valid JSON")
    assert details["metadata:3"].startswith("line 3 is not a JSON object")
    assert details["metadata:4"].startswith("line 4 has no file_name")


def test_row_problem_is_pure() -> None:
    assert row_problem({"file_name": "a.wav"}, "") is None
    assert str(row_problem(None, "{not json")).startswith("is not valid JSON (")
    assert row_problem(None, "[1]") == "is not a JSON object"
    assert row_problem({"file_name": ""}, "") == "has no file_name"
    assert row_problem({"file_name": 3}, "") == "has no file_name"


# --- a header with an implausible sample rate ----------------------------------------------


def with_sample_rate(wav: bytes, rate: int) -> bytes:
    """A canonical PCM WAV whose header claims ``rate`` (fmt chunk: rate, then byte rate)."""
    assert wav[:4] == b"RIFF" and wav[12:16] == b"fmt "
    channels, bits = struct.unpack("<H", wav[22:24])[0], struct.unpack("<H", wav[34:36])[0]
    header = struct.pack("<II", rate, rate * channels * bits // 8)
    return wav[:24] + header + wav[32:]


def test_implausible_sample_rate_is_unreadable(tmp_path: Path) -> None:
    eight_hz = with_sample_rate(audio_bytes(tone(0.001, sr=16_000)), 8)  # 16 samples: "2 s"
    src = write_audiofolder(
        tmp_path / "src",
        [
            good("a.wav", 300),
            {"file_name": "8hz.wav", "bytes": eight_hz, "text": "x"},
            {"file_name": "phone.wav", "bytes": audio_bytes(tone(1.0, 8_000), 8_000), "text": "y"},
        ],
    )
    out = tmp_path / "out"
    result = run(src, out)
    assert_adds_up(result, 3)
    assert result.report.by_reason == {"unreadable": 1}  # 8 kHz telephone audio is kept
    [q] = quarantine(out)
    assert (q["source_id"], q["reason"]) == ("8hz.wav", "unreadable")
    assert q["detail"].startswith("sample rate 8 Hz")
    assert (out / q["copy"]).read_bytes() == eight_hz


@pytest.mark.parametrize("rate", [0, 8, MIN_SAMPLE_RATE - 1])
def test_sample_rate_below_the_minimum(rate: int) -> None:
    assert check_sample_rate(rate) == ("unreadable", f"sample rate {rate} Hz (minimum 1000 Hz)")


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE, 8_000, 48_000])
def test_plausible_sample_rate(rate: int) -> None:
    assert check_sample_rate(rate) == ("kept", "")
