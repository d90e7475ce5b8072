"""Long audio with segment times: the subtitle writers, the safeguards' options and checks, and
the consumer's long-form decoding on a tiny model (its timestamps are random; what is tested is
the plumbing: times in order and inside the audio, the same segments twice, the RNG untouched)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distilflow.config import DecodeConfig
from distilflow.config.checks import longform_problem
from distilflow.decoding.longform import LongForm, clamp_segments, longform_of
from distilflow.decoding.subtitles import Segment, clock, render, to_json, to_srt, to_txt, to_vtt
from distilflow.register.consumer import RegisteredWhisper
from distilflow.testing import save_tiny_whisper

SEGMENTS = [
    Segment(0.0, 2.5, " Bonjour."),
    Segment(2.5, 2.9, "  "),  # blank: no cue
    Segment(3661.002, 3662.25, "Au revoir."),
]


def test_clock() -> None:
    assert clock(0) == "00:00:00,000"
    assert clock(3661.0015) == "01:01:01,002"
    assert clock(59.9996, ".") == "00:01:00.000"
    assert clock(-1.0) == "00:00:00,000"


def test_writers() -> None:
    assert to_txt(SEGMENTS) == "Bonjour. Au revoir.\n"
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nBonjour.\n\n"
        "2\n01:01:01,002 --> 01:01:02,250\nAu revoir.\n\n"
    )
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nBonjour.\n\n"
        "01:01:01.002 --> 01:01:02.250\nAu revoir.\n\n"
    )
    body = json.loads(to_json(SEGMENTS, "fr"))
    assert body["language"] == "fr" and body["text"] == "Bonjour. Au revoir."
    assert body["segments"][1] == {"start": 3661.002, "end": 3662.25, "text": "Au revoir."}
    assert render(SEGMENTS, "srt") == to_srt(SEGMENTS)
    with pytest.raises(ValueError, match="'doc'"):
        render(SEGMENTS, "doc")


def test_clamp_segments() -> None:
    out = clamp_segments([Segment(-0.5, 1.0, "a"), Segment(9.0, 8.0, "b"), Segment(9, 12, "c")], 10)
    assert out == [Segment(0.0, 1.0, "a"), Segment(9.0, 9.0, "b"), Segment(9.0, 10.0, "c")]


def test_longform_options_and_checks() -> None:
    lf = longform_of(DecodeConfig(temperatures=[0.0, 0.5], compression_ratio_threshold=None))
    assert lf == LongForm(temperatures=(0.0, 0.5), compression_ratio_threshold=None)
    kwargs = lf.generate_kwargs()
    assert kwargs["temperature"] == (0.0, 0.5) and kwargs["compression_ratio_threshold"] is None
    assert longform_problem([0.0, 0.2], 1.35, -1.0, 0.6) is None
    assert longform_problem([0.0, 0.2], None, None, None) is None
    assert "non-empty" in str(longform_problem([], 1.35, -1.0, 0.6))
    assert "rise" in str(longform_problem([0.2, 0.0], 1.35, -1.0, 0.6))
    assert "compression_ratio" in str(longform_problem([0.0], 0.0, -1.0, 0.6))
    assert "logprob" in str(longform_problem([0.0], 1.35, 0.5, 0.6))
    assert "no_speech" in str(longform_problem([0.0], 1.35, -1.0, 0.0))


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> RegisteredWhisper:
    return RegisteredWhisper.from_dir(
        save_tiny_whisper(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    )


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_long_audio_segments(consumer: RegisteredWhisper, tmp_path: Path) -> None:
    audio = tone(40.0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    segments = consumer.segments(audio, "fr", max_new_tokens=12)
    assert torch.rand(1) == before  # the fallback's sampling ran in a forked RNG
    assert segments and segments == consumer.segments(audio, "fr", max_new_tokens=12)
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and starts[0] >= 0
    assert all(s.start <= s.end <= 40.0 for s in segments)
    assert max(s.end for s in segments) > 30.0  # the decode went past the first window
    text = consumer.transcribe(audio, "fr", max_new_tokens=12)
    assert text == to_txt(segments).strip()  # long audio: the same long-form decode
