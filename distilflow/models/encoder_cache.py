"""Encoder outputs cached on disk, keyed by the clip's audio hash and the encoder's weights
(and, through :func:`states_cache`, the padding of its input features).

When the student's encoder is frozen and identical to the teacher's, each clip's encoder states
are computed once; every training step then runs only the two decoders. One safetensors file a
clip, ``root/<encoder_hash>/<hash[:2]>/<hash>.safetensors``, written atomically: a killed write
leaves no file that ``get`` would read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from distilflow.atomic import atomic_write_bytes
from distilflow.models.features import padding_of
from distilflow.progress import progress as show_progress
from distilflow.safetensors_io import sorted_metadata

STATES_KEY = "states"  # the tensor's name inside each file
_CLIP_HASH = re.compile(r"[0-9A-Za-z_-]{2,128}")  # a file name, never a path


def module_hash(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes), first 16 hex digits."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class EncoderCache:
    """Encoder states of clips, one safetensors file each, for one encoder (by weight hash)."""

    def __init__(self, root: Path, encoder_hash: str, dtype: torch.dtype = torch.float16) -> None:
        self.dir = Path(root) / encoder_hash  # everything of this encoder
        self.encoder_hash = encoder_hash
        self.dtype = dtype  # stored precision (fp16 halves the disk of fp32 at ~1e-3 error)

    def path(self, clip_hash: str) -> Path:
        if not _CLIP_HASH.fullmatch(clip_hash):
            raise ValueError(f"not a clip hash: {clip_hash!r}")
        return self.dir / clip_hash[:2] / f"{clip_hash}.safetensors"

    def has(self, clip_hash: str) -> bool:
        return self.path(clip_hash).exists()

    def missing(self, hashes: Sequence[str]) -> list[str]:
        """The hashes (in order) the cache holds no states for."""
        return [h for h in hashes if not self.has(h)]

    def get(self, clip_hash: str) -> torch.Tensor | None:
        """The stored (frames, d) states in the cache's dtype, or None."""
        path = self.path(clip_hash)
        if not path.exists():
            return None
        return load_file(str(path))[STATES_KEY]  # safetensors: no pickle is ever loaded

    def get_many(self, hashes: Sequence[str]) -> torch.Tensor | None:
        """(B, frames, d) states of ``hashes`` in order, or None when any is missing."""
        if self.missing(hashes):
            return None
        found = [self.get(h) for h in hashes]
        return torch.stack([t for t in found if t is not None])

    def put(self, clip_hash: str, states: torch.Tensor) -> None:
        """Store one clip's (frames, d) states: temp file + ``os.replace``, never partial."""
        if states.ndim != 2:
            raise ValueError(f"states of one clip are (frames, d), got {tuple(states.shape)}")
        tensor = states.detach().to("cpu", self.dtype).contiguous()
        data = sorted_metadata(  # same states, same bytes: the writer's key order varies
            save({STATES_KEY: tensor}, metadata={"clip": clip_hash, "encoder": self.encoder_hash})
        )
        atomic_write_bytes(self.path(clip_hash), data)


def _last_hidden_state(output: Any) -> torch.Tensor:
    """The states of an encoder's output: a transformers ModelOutput, a tuple or a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        states: torch.Tensor = output.last_hidden_state
        return states
    first: torch.Tensor = output[0]
    return first


def fill(
    cache: EncoderCache,
    encoder: torch.nn.Module,
    feature_fn: Callable[[list[str]], torch.Tensor],
    hashes: list[str],
    batch_size: int,
    progress: bool = False,
) -> int:
    """Compute and store the states of the clips the cache lacks; returns how many were computed.

    ``feature_fn`` maps clip hashes to the encoder's input features (on its device). The encoder
    runs in eval mode (no dropout or layer drop in cached states); its mode is restored after.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be >= 1")
    todo = cache.missing(list(dict.fromkeys(hashes)))
    if not todo:
        return 0
    was_training = encoder.training
    encoder.eval()
    try:
        with (
            torch.inference_mode(),
            show_progress(len(todo), "encode", unit="clip", enabled=progress) as bar,
        ):
            for start in range(0, len(todo), batch_size):
                part = todo[start : start + batch_size]
                states = _last_hidden_state(encoder(feature_fn(part)))
                for clip_hash, clip_states in zip(part, states, strict=True):
                    cache.put(clip_hash, clip_states)
                bar.update(len(part))
    finally:
        encoder.train(was_training)
    return len(todo)


def states_cache(root: Path, encoder: torch.nn.Module, feature_extractor: Any) -> EncoderCache:
    """The cache of ``encoder``'s states under ``root``, keyed by its weights and by how
    ``feature_extractor`` pads the log-mel past a clip (models/features.py): either changes them."""
    return EncoderCache(root, f"{module_hash(encoder)}-{padding_of(feature_extractor)}")
