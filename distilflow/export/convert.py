"""Export a Whisper to CTranslate2 (int8 by default) for ctranslate2 and faster-whisper users.

``export_ct2`` converts a transformers Whisper directory (``save_pretrained``: safetensors,
processor, generation config) or an in-memory model + processor (for instance the student with
one language's experts merged into plain feed-forward weights) with ctranslate2's own
``TransformersConverter``. The directory it writes holds ``model.bin``, ``config.json``,
``vocabulary.json``, ``tokenizer.json``, ``preprocessor_config.json`` (what faster-whisper reads;
transformers 5 saves only ``processor_config.json``) and ``distilflow_export.json`` (lineage, and
the audio context a server must feed: a dynamic-context model reads the clip's own length plus
its margin, which ``ctranslate2.models.Whisper.generate`` accepts and faster-whisper's
``transcribe`` does not, as it pads to 30 s; see docs/export.md). It is built beside ``out_dir``
and renamed into place: readers never see a half-written export.

``verify_export`` (in :mod:`distilflow.export.verify`) decodes the same clips with the export
and with the torch model and measures how far the two transcripts agree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

from distilflow.atomic import atomic_write_json
from distilflow.export.verify import (
    ClipComparison,
    VerifyClip,
    VerifyReport,
    faster_whisper_transcribe,
    verify_export,
)
from distilflow.models.convert import atomic_dir
from distilflow.models.dynamic import DYNAMIC, audio_context_of_dir, context_margin_of_dir
from distilflow.models.load import file_sha256, transformers_dir_fingerprint

SIDE_FILE = "distilflow_export.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
FORMAT_VERSION = 1
QUANTIZATIONS = (
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)
__all__ = [
    "SIDE_FILE",
    "ClipComparison",
    "VerifyClip",
    "VerifyReport",
    "export_ct2",
    "faster_whisper_transcribe",
    "read_export_info",
    "verify_export",
]
WhisperPair = tuple[WhisperForConditionalGeneration, WhisperProcessor]


def export_ct2(
    model_dir: Path | None,
    out_dir: Path,
    quantization: str = "int8",
    *,
    model: WhisperPair | None = None,
    language: str | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> Path:
    """Convert ``model_dir`` (or the in-memory ``model``) into a CTranslate2 directory ``out_dir``.

    Give exactly one of ``model_dir`` and ``model`` (a model and its processor). ``language``
    records whose experts were merged (None: the plain model); ``lineage`` adds entries (git
    commit, params hash) to the side file. An existing ``out_dir`` is replaced once the new
    export is complete.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    if (model_dir is None) == (model is None):
        raise ValueError("give either model_dir or model (an in-memory model and processor)")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.src-") as tmp:
        src = _stage(model, Path(tmp)) if model is not None else Path(str(model_dir))
        _check_source(src)
        info = {
            "format": FORMAT_VERSION,
            "source": "in-memory model" if model is not None else str(model_dir),
            "source_fingerprint": transformers_dir_fingerprint(src),
            "quantization": quantization,
            "language": language,
            "lineage": dict(lineage or {}),
            **audio_context_info(src),
        }
        _write_export(src, out_dir, quantization, info)
    return out_dir


def audio_context_info(src: Path) -> dict[str, Any]:
    """What a server must feed the export: ``padded`` (the 30 s window, as faster-whisper's
    ``transcribe`` does) or ``dynamic`` (the clip's length plus ``context_margin_s``, rounded up
    to ``context_multiple_s``: ``ctranslate2.models.Whisper.generate`` on cut features)."""
    kind, multiple = audio_context_of_dir(src)
    margin = context_margin_of_dir(src) if kind == DYNAMIC else None
    return {"audio_context": kind, "context_multiple_s": multiple, "context_margin_s": margin}


def _stage(model: WhisperPair, staging: Path) -> Path:
    """Save an in-memory model and processor as a transformers directory (safetensors)."""
    whisper, processor = model
    whisper.save_pretrained(staging)
    processor.save_pretrained(staging)
    return staging


def _check_source(src: Path) -> None:
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json, not a transformers model directory")
    if not any(src.glob("*.safetensors")):
        raise FileNotFoundError(f"{src}: no safetensors weights (pickled weights are refused)")
    if not (src / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{src}: no tokenizer.json (faster-whisper needs it)")


def _write_export(src: Path, out_dir: Path, quantization: str, info: dict[str, Any]) -> None:
    """Convert into a temporary sibling, add the side files, then swap it in for ``out_dir``."""
    import ctranslate2
    import transformers
    from ctranslate2.converters import TransformersConverter

    old: Path | None = None
    with atomic_dir(out_dir) as tmp:
        converter = TransformersConverter(
            str(src), copy_files=["tokenizer.json"], trust_remote_code=False
        )
        converter.convert(str(tmp), quantization=quantization, force=True)
        write_preprocessor_config(src, tmp)
        info["ctranslate2_version"] = ctranslate2.__version__
        info["transformers_version"] = transformers.__version__
        info["model_bin_sha256"] = file_sha256(tmp / "model.bin")
        atomic_write_json(tmp / SIDE_FILE, info)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / out_dir.name)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_preprocessor_config(src: Path, dst: Path) -> Path:
    """faster-whisper's ``preprocessor_config.json`` (flat feature-extractor settings)."""
    extractor = WhisperFeatureExtractor.from_pretrained(str(src), local_files_only=True)
    path = dst / PREPROCESSOR_FILE
    extractor.to_json_file(str(path))
    return path


def read_export_info(ct2_dir: Path) -> dict[str, Any]:
    """The side file of an export: source fingerprint, quantization, language, versions."""
    info: dict[str, Any] = json.loads((Path(ct2_dir) / SIDE_FILE).read_text("utf-8"))
    return info
