"""Transcripts with segment times as text, SubRip (srt), WebVTT (vtt) or JSON. Pure functions.

A :class:`Segment` is one stretch of speech with its start and end in seconds from the start of
the audio (what Whisper's timestamp tokens give). The writers follow the formats' own rules:
SubRip numbers its cues from 1 and writes ``HH:MM:SS,mmm``; WebVTT starts with ``WEBVTT`` and
writes ``HH:MM:SS.mmm``; neither allows an empty cue, so segments without text are left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

FORMATS = ("txt", "srt", "vtt", "json")


@dataclass(frozen=True)
class Segment:
    """One stretch of a transcript: seconds from the start of the audio, and its text."""

    start: float
    end: float
    text: str


def clock(seconds: float, separator: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SubRip) or, with ``separator="."``, WebVTT's ``HH:MM:SS.mmm``. Pure.

    Negative times are written as 0; milliseconds are rounded.
    """
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _spoken(segments: Sequence[Segment]) -> list[Segment]:
    return [s for s in segments if s.text.strip()]


def to_txt(segments: Sequence[Segment]) -> str:
    """The transcript: the segments' texts joined with a space, one line."""
    return " ".join(s.text.strip() for s in _spoken(segments)) + "\n"


def _cues(segments: Sequence[Segment], separator: str) -> list[str]:
    return [
        f"{clock(s.start, separator)} --> {clock(max(s.end, s.start), separator)}\n{s.text.strip()}"
        for s in _spoken(segments)
    ]


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line between."""
    cues = _cues(segments, ",")
    return "".join(f"{i}\n{cue}\n\n" for i, cue in enumerate(cues, start=1))


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: the ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues."""
    return "WEBVTT\n\n" + "".join(f"{cue}\n\n" for cue in _cues(segments, "."))


def to_json(segments: Sequence[Segment], language: str | None = None) -> str:
    """``{"language": ..., "text": ..., "segments": [{"start", "end", "text"}, ...]}``."""
    body = {
        "language": language,
        "text": to_txt(segments).strip(),
        "segments": [
            {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip()}
            for s in _spoken(segments)
        ],
    }
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def render(segments: Sequence[Segment], fmt: str, language: str | None = None) -> str:
    """The transcript in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "txt":
        return to_txt(segments)
    if fmt == "srt":
        return to_srt(segments)
    if fmt == "vtt":
        return to_vtt(segments)
    if fmt == "json":
        return to_json(segments, language)
    raise ValueError(f"unknown transcript format {fmt!r}: expected one of {', '.join(FORMATS)}")
