"""The on-disk encoder cache: round trip, keying by weights, fill, crash safety."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from distilflow.models.encoder_cache import EncoderCache, fill, module_hash
from distilflow.testing import tiny_whisper

FRAMES, D = 1500, 64  # a tiny Whisper's encoder output per clip


def _hash(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _states(seed: int) -> torch.Tensor:
    return torch.randn(FRAMES, D, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def encoder() -> Any:
    model, _ = tiny_whisper(seed=0, layers=1)
    return model.model.encoder


def test_module_hash_changes_with_any_weight() -> None:
    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))

    a, b = net(), net()
    h = module_hash(a)
    assert len(h) == 16 and int(h, 16) >= 0
    assert module_hash(b) == h
    with torch.no_grad():
        b[0].weight[2, 1] += 1e-6  # type: ignore[index]
    assert module_hash(b) != h
    assert module_hash(net().half()) != h  # dtype counts
    scalar = torch.nn.Module()
    scalar.register_parameter("t", torch.nn.Parameter(torch.tensor(2.0)))  # 0-d is fine
    assert len(module_hash(scalar)) == 16


def test_round_trip_in_float16(tmp_path: Path) -> None:
    cache = EncoderCache(tmp_path, "enc0")
    h0, h1, h2 = _hash(0), _hash(1), _hash(2)
    assert cache.get(h0) is None and not cache.has(h0)
    cache.put(h0, _states(0))
    cache.put(h1, _states(1))
    got = cache.get(h0)
    assert got is not None and got.shape == (FRAMES, D) and got.dtype == torch.float16
    torch.testing.assert_close(got.float(), _states(0), atol=2e-3, rtol=1e-3)
    assert cache.has(h0) and cache.missing([h0, h2, h1]) == [h2]
    many = cache.get_many([h1, h0])
    assert many is not None and many.shape == (2, FRAMES, D)
    torch.testing.assert_close(many[0].float(), _states(1), atol=2e-3, rtol=1e-3)
    assert cache.get_many([h0, h2]) is None
    assert (tmp_path / "enc0" / h0[:2] / f"{h0}.safetensors").is_file()
    assert EncoderCache(tmp_path, "enc1").get(h0) is None  # other weights, other cache
    full = EncoderCache(tmp_path, "enc2", dtype=torch.float32)
    full.put(h0, _states(0))
    assert torch.equal(full.get(h0), _states(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a clip hash"):
        cache.put("../x", _states(0))
    with pytest.raises(ValueError, match="frames, d"):
        cache.put(h2, _states(0)[None])


def test_a_write_killed_before_the_rename_leaves_nothing_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = EncoderCache(tmp_path, "enc")
    h = _hash(0)

    def crash(src: Any, dst: Any) -> None:
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        cache.put(h, _states(0))
    assert cache.get(h) is None and not cache.has(h) and cache.missing([h]) == [h]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no temp file left behind
    monkeypatch.undo()
    cache.put(h, _states(0))
    assert cache.get(h) is not None


def test_fill_computes_only_what_is_missing(tmp_path: Path, encoder: Any) -> None:
    calls: list[list[str]] = []

    def features(hashes: list[str]) -> torch.Tensor:
        calls.append(hashes)
        seeds = [int(h[:8], 16) for h in hashes]
        return torch.stack(
            [torch.randn(80, 3000, generator=torch.Generator().manual_seed(s)) for s in seeds]
        )

    cache = EncoderCache(tmp_path, module_hash(encoder))
    hashes = [_hash(i) for i in range(5)]
    encoder.train()
    assert fill(cache, encoder, features, [*hashes, hashes[0]], batch_size=2) == 5
    assert [len(c) for c in calls] == [2, 2, 1] and encoder.training  # mode restored
    with torch.no_grad():
        encoder.eval()
        expected = encoder(features(hashes[3:5])).last_hidden_state
    got = cache.get_many(hashes[3:5])
    assert got is not None
    torch.testing.assert_close(got.float(), expected, atol=5e-3, rtol=1e-3)

    calls.clear()
    assert fill(cache, encoder, features, hashes, batch_size=2) == 0
    assert calls == []
    assert fill(cache, encoder, features, [*hashes, _hash(9)], batch_size=4, progress=False) == 1
    assert calls == [[_hash(9)]]


def test_fill_accepts_an_encoder_returning_a_tensor(tmp_path: Path) -> None:
    linear = torch.nn.Linear(3, D)
    cache = EncoderCache(tmp_path, module_hash(linear))
    hashes = [_hash(i) for i in range(3)]
    assert fill(cache, linear, lambda hs: torch.ones(len(hs), 7, 3), hashes, batch_size=8) == 3
    states = cache.get_many(hashes)
    assert states is not None and states.shape == (3, 7, D)
    with pytest.raises(ValueError, match="batch_size"):
        fill(cache, linear, lambda hs: torch.ones(len(hs), 7, 3), [_hash(5)], batch_size=0)
