"""The export stage's ``verification.json``: written by the stage, read by the flow and the results
page (one module for both).

The file holds an ``ExportVerification`` (the export checked against the torch model; a
dynamic-context export on the clips' own lengths plus margin). Fields are declared in the order the
file's dicts have always had (the flow prints parts of them unsorted); the file is written by
``atomic_write_json`` (key-sorted, indented), so a report reads back equal and rewrites
byte-identical. Importing this module loads neither torch nor CTranslate2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distilflow.report_file import JsonReport

if TYPE_CHECKING:
    from distilflow.export.verify import VerifyReport


@dataclass(frozen=True)
class ClipRecord:
    """One dev clip decoded by both models (text tokens: no prompt, no end-of-text)."""

    id: str  # the clip's manifest id
    language: str  # the language both decoded it in
    torch_text: str  # the torch model's transcript
    ct2_text: str  # the export's transcript
    torch_tokens: list[int]  # the torch model's tokens
    ct2_tokens: list[int]  # the export's tokens
    token_agreement: float  # common prefix over the longer output (1.0: identical)


@dataclass(frozen=True)
class FasterWhisperMissing(JsonReport):
    """faster-whisper could not be imported: its check did not run."""

    installed: Literal[False]  # always False
    error: str  # the ImportError's message


@dataclass(frozen=True)
class FasterWhisperCheck(JsonReport):
    """faster-whisper's transcripts (its own front end) against the export's."""

    installed: Literal[True]  # always True
    clips: int  # clips transcribed
    same_text_as_ctranslate2_share: float  # share with exactly the export's transcript
    same_normalised_text_as_ctranslate2_share: float  # the same after the basic normaliser
    texts: list[str]  # faster-whisper's transcripts, in clip order


@dataclass(frozen=True)
class ExportVerification(JsonReport):
    """The export against the torch model on dev clips (``VerifyReport.summary`` documents the
    figures) and faster-whisper's check."""

    clips: int  # dev clips decoded
    identical_tokens_share: float  # share of clips with identical tokens
    exact_text_share: float  # share of clips with identical text
    mean_token_agreement: float  # mean of the clips' token_agreement
    wer_vs_torch: float  # corpus WER of the export against torch, normalised text
    torch_loop_clips: int  # clips where the torch output is a repetition loop
    export_loop_clips: int  # clips where only the export's output loops
    export_loop_share: float  # export_loop_clips over the clips (gated: export.max_loop_share)
    wer_vs_torch_settled: float  # wer_vs_torch without looping clips (gated: max_wer_vs_torch)
    max_new_tokens: int  # the token budget of both decoders
    per_clip: list[ClipRecord]  # every clip, in decoding order
    language: str | None  # export.language: the experts merged in, None for the plain student
    quantization: str  # export.quantization
    faster_whisper: FasterWhisperCheck | FasterWhisperMissing  # faster-whisper's check

    @classmethod
    def of(
        cls,
        report: VerifyReport,
        language: str | None,
        quantization: str,
        faster_whisper: FasterWhisperCheck | FasterWhisperMissing,
    ) -> ExportVerification:
        """The verification of ``report`` (its summary's keys are this class's first fields)."""
        per_clip = [
            ClipRecord(**asdict(c), token_agreement=c.token_agreement) for c in report.comparisons
        ]
        return cls(
            **report.summary(),
            per_clip=per_clip,
            language=language,
            quantization=quantization,
            faster_whisper=faster_whisper,
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExportVerification:
        fw = raw["faster_whisper"]
        return cls(
            **{k: v for k, v in raw.items() if k not in ("per_clip", "faster_whisper")},
            per_clip=[ClipRecord(**c) for c in raw["per_clip"]],
            faster_whisper=FasterWhisperCheck(**fw)
            if fw["installed"]
            else FasterWhisperMissing(**fw),
        )


def verification_from_dict(raw: dict[str, Any]) -> ExportVerification:
    """``verification.json``, from its parsed JSON."""
    return ExportVerification.from_dict(raw)


def read_verification(path: Path) -> ExportVerification:
    """``verification.json``."""
    return verification_from_dict(json.loads(path.read_text(encoding="utf-8")))
