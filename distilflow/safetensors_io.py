"""Safetensors files whose bytes depend on their content only.

The safetensors writer keeps ``__metadata__`` in a hash map, so a file with two or more metadata
keys comes out in a different key order from one process to the next: identical tensors and
metadata, another DVC hash, and every stage after it runs again. Sorting the metadata keys in
the header fixes the bytes; the header keeps its length, so the data offsets stay valid.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save

from distilflow.atomic import atomic_write_bytes

_LENGTH = struct.Struct("<Q")  # the header's byte length, little-endian u64


def sorted_metadata(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its ``__metadata__`` keys in sorted order. Pure."""
    (size,) = _LENGTH.unpack_from(data)
    start, end = _LENGTH.size, _LENGTH.size + size
    raw = data[start:end]
    header = json.loads(raw)
    metadata = header.get("__metadata__")
    if not metadata:
        return data
    header["__metadata__"] = dict(sorted(metadata.items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text = text.ljust(size, b" ")  # the writer pads the header with spaces for alignment
    if len(text) != size:  # a writer escaping otherwise than json: keep its bytes (still valid)
        return data
    return data[:start] + text + data[end:]


def save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Write ``tensors`` with ``metadata`` to ``path`` atomically, in content-stable bytes."""
    atomic_write_bytes(Path(path), sorted_metadata(save(dict(tensors), metadata=dict(metadata))))
    return Path(path)
