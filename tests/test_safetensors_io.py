"""Safetensors bytes that depend on the content only (sorted metadata keys)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from distilflow.safetensors_io import save_tensors, sorted_metadata

TENSORS = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3)}
META = {"language": "fr", "spec": '{"rank": 16}', "base": "2883117985efd582", "format": "1"}


def test_the_same_content_gives_the_same_bytes_whatever_the_metadata_order() -> None:
    files = {sorted_metadata(_file(order)) for order in _orders(META)}
    assert len(files) == 1
    data = files.pop()
    assert _metadata_order(data) == sorted(META)
    assert sorted_metadata(data) == data  # idempotent


def test_sorted_file_loads_with_its_tensors_and_metadata(tmp_path: Path) -> None:
    path = save_tensors(tmp_path / "fr.safetensors", TENSORS, META)
    loaded = load_file(str(path))
    assert set(loaded) == set(TENSORS)
    for name, tensor in TENSORS.items():
        assert torch.equal(loaded[name], tensor)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == META
    assert _metadata_order(path.read_bytes()) == sorted(META)  # the reader's dict has no order


def test_files_without_metadata_pass_unchanged() -> None:
    data = save(TENSORS)
    assert sorted_metadata(data) == data


def test_non_ascii_metadata_keeps_the_header_length() -> None:
    meta = [("z", "ça va"), ("m", "привет"), ("a", "日本")]
    data = _file(meta)
    out = sorted_metadata(data)
    assert len(out) == len(data)
    assert _metadata_order(out) == ["a", "m", "z"]
    with safe_open_bytes(out) as metadata:
        assert metadata == dict(meta)


def _orders(meta: dict[str, str]) -> list[list[tuple[str, str]]]:
    items = list(meta.items())
    return [items, items[::-1], items[1:] + items[:1], sorted(items)]


def _file(metadata: list[tuple[str, str]]) -> bytes:
    """A safetensors file of TENSORS whose header holds ``metadata`` in exactly this order (the
    writer's own order is a hash map's, which a test cannot choose)."""
    data = save(TENSORS)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header.pop("__metadata__", None)
    full = {"__metadata__": dict(metadata), **header}
    raw = json.dumps(full, separators=(",", ":"), ensure_ascii=False).encode()
    raw = raw.ljust(-(-len(raw) // 8) * 8, b" ")
    return len(raw).to_bytes(8, "little") + raw + data[8 + size :]


def _metadata_order(data: bytes) -> list[str]:
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return list(header["__metadata__"])


@contextmanager
def safe_open_bytes(data: bytes) -> Iterator[dict[str, str]]:
    """The metadata of a safetensors file given as bytes, read by safetensors itself."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.safetensors"
        path.write_bytes(data)
        with safe_open(str(path), framework="pt") as fh:
            yield fh.metadata()


@pytest.mark.parametrize("broken", [b"\x05\x00\x00\x00\x00\x00\x00\x00{nope"])
def test_a_broken_header_is_an_error(broken: bytes) -> None:
    with pytest.raises(ValueError):
        sorted_metadata(broken)
