"""Safetensors bytes that depend on the content only (sorted metadata keys)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from distilflow.safetensors_io import save_tensors, sorted_metadata

TENSORS = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3)}
META = {"language": "fr", "spec": '{"rank": 16}', "base": "2883117985efd582", "format": "1"}


def test_the_same_content_gives_the_same_bytes_whatever_the_metadata_order() -> None:
    files = {sorted_metadata(save(TENSORS, metadata=dict(order))) for order in _orders(META)}
    assert len(files) == 1
    data = files.pop()
    assert sorted_metadata(data) == data  # idempotent


def test_sorted_file_loads_with_its_tensors_and_metadata(tmp_path: Path) -> None:
    path = save_tensors(tmp_path / "fr.safetensors", TENSORS, META)
    loaded = load_file(str(path))
    assert set(loaded) == set(TENSORS)
    for name, tensor in TENSORS.items():
        assert torch.equal(loaded[name], tensor)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == META
    data = path.read_bytes()  # the reader's dict has no order: read the header itself
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert list(header["__metadata__"]) == sorted(META)


def test_files_without_metadata_pass_unchanged() -> None:
    data = save(TENSORS)
    assert sorted_metadata(data) == data


def test_non_ascii_metadata_keeps_the_header_length(tmp_path: Path) -> None:
    meta = {"z": "ça va", "a": "привет"}
    path = save_tensors(tmp_path / "x.safetensors", TENSORS, meta)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == meta


def _orders(meta: dict[str, str]) -> list[list[tuple[str, str]]]:
    items = list(meta.items())
    return [items, items[::-1], items[1:] + items[:1], sorted(items)]


@pytest.mark.parametrize("broken", [b"\x05\x00\x00\x00\x00\x00\x00\x00{nope"])
def test_a_broken_header_is_an_error(broken: bytes) -> None:
    with pytest.raises(ValueError):
        sorted_metadata(broken)
