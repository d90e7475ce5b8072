"""Training data: prompts, label alignment, padding, the hash split, balanced sampling."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from distilflow.audio import load_audio
from distilflow.testing import tiny_whisper
from distilflow.training.data import (
    IGNORE,
    BalancedSampler,
    collate,
    decoder_example,
    language_weights,
    load_training_examples,
    log_mel,
    prompt_ids,
    split_of,
)
from tests.helpers import audio_bytes, tone


@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_whisper(seed=0)


def _hashes(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


# -- prompt -----------------------------------------------------------------------------------
def test_prompt_ids_decode_to_whispers_prompt(tiny: Any) -> None:
    model, processor = tiny
    gen = model.generation_config
    decode = processor.tokenizer.decode
    fr = prompt_ids(gen, "fr")
    assert decode(fr) == "<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>"
    assert prompt_ids(gen, "<|fr|>") == fr
    assert fr[0] == gen.decoder_start_token_id and fr[-1] == gen.no_timestamps_token_id
    timed = prompt_ids(gen, "es", task="translate", timestamps=True)
    assert decode(timed) == "<|startoftranscript|><|es|><|translate|>"


def test_prompt_ids_reject_unknown_language_and_task(tiny: Any) -> None:
    gen = tiny[0].generation_config
    with pytest.raises(ValueError, match="language 'xx' is not one the model knows"):
        prompt_ids(gen, "xx")
    with pytest.raises(ValueError, match="task 'summarise'"):
        prompt_ids(gen, "fr", task="summarise")


# -- one example --------------------------------------------------------------------------------
PROMPT = [50, 51, 52, 53]
EOS = 99


def test_labels_are_the_next_input_token_and_the_language_token_is_scored() -> None:
    inputs, labels = decoder_example([10, 11, 12], PROMPT, EOS)
    assert inputs == [50, 51, 52, 53, 10, 11, 12]
    # after <|sot|>: the language (51), the task (52) and <|notimestamps|> (53) are scored
    assert labels == [51, 52, 53, 10, 11, 12, EOS]
    for i in range(len(inputs) - 1):
        assert labels[i] == inputs[i + 1]
    # an empty transcript still teaches the model to stop
    assert decoder_example([], PROMPT, EOS) == (PROMPT, [51, 52, 53, EOS])


def test_long_examples_are_cut_with_inputs_and_labels_aligned() -> None:
    tokens = np.arange(100, 110, dtype=np.int32)  # as read from Parquet
    inputs, labels = decoder_example(tokens, PROMPT, EOS, max_length=8)
    assert inputs == [50, 51, 52, 53, 100, 101, 102, 103]
    assert labels == [51, 52, 53, 100, 101, 102, 103, 104]
    assert all(type(t) is int for t in inputs + labels)
    assert decoder_example([1, 2], PROMPT, EOS, max_length=4)[1] == [51, 52, 53, 1]
    with pytest.raises(ValueError, match="shorter than the prompt"):
        decoder_example([1], PROMPT, EOS, max_length=3)
    with pytest.raises(ValueError, match="prompt is empty"):
        decoder_example([1], [], EOS)


def test_collate_pads_inputs_labels_and_mask_and_passes_other_keys() -> None:
    a_in, a_lab = decoder_example([10, 11, 12], PROMPT, EOS)
    b_in, b_lab = decoder_example([20], PROMPT, EOS)
    batch = collate(
        [
            {"hash": "aa", "language": "fr", "decoder_input_ids": a_in, "labels": a_lab},
            {"hash": "bb", "language": "es", "decoder_input_ids": b_in, "labels": b_lab},
        ],
        pad_id=7,
    )
    assert set(batch) == {
        "decoder_input_ids",
        "labels",
        "decoder_attention_mask",
        "hash",
        "language",
    }
    assert batch["decoder_input_ids"].dtype == torch.long
    assert batch["decoder_input_ids"].tolist() == [a_in, [*b_in, 7, 7]]
    assert batch["labels"].tolist() == [a_lab, [*b_lab, IGNORE, IGNORE]]
    assert batch["decoder_attention_mask"].tolist() == [[1] * 7, [1] * 5 + [0, 0]]
    assert batch["hash"] == ["aa", "bb"] and batch["language"] == ["fr", "es"]
    with pytest.raises(ValueError, match="labels"):
        collate([{"decoder_input_ids": [1, 2], "labels": [1]}], pad_id=0)


# -- split --------------------------------------------------------------------------------------
def test_split_is_deterministic_by_hash_and_roughly_proportional() -> None:
    hashes = _hashes(4000)
    splits = [split_of(h, 0.2) for h in hashes]
    assert splits == [split_of(h, 0.2) for h in hashes]
    assert splits[:50] == [split_of(h, 0.2) for h in hashes[:50]]  # growing data: same answer
    assert 0.17 < splits.count("dev") / len(splits) < 0.23
    assert {split_of(h, 0.0) for h in hashes} == {"train"}
    assert {split_of(h, 1.0) for h in hashes} == {"dev"}
    # more dev only moves clips from train to dev
    assert all(split_of(h, 0.3) == "dev" for h, s in zip(hashes, splits, strict=True) if s == "dev")
    with pytest.raises(ValueError):
        split_of(hashes[0], 1.5)


# -- language weights ---------------------------------------------------------------------------
def test_language_weights_follow_temperature() -> None:
    counts = {"en": 900, "fr": 100}
    t1 = language_weights(counts, 1.0)
    assert t1 == pytest.approx({"en": 0.9, "fr": 0.1})
    t2 = language_weights(counts, 2.0)
    assert t2 == pytest.approx({"en": 30 / 40, "fr": 10 / 40})  # sqrt(900), sqrt(100)
    assert language_weights(counts, 1e6) == pytest.approx({"en": 0.5, "fr": 0.5}, abs=1e-5)
    assert language_weights(counts, math.inf) == {"en": 0.5, "fr": 0.5}
    assert sum(language_weights({"a": 5, "b": 7, "c": 11}, 3.0).values()) == pytest.approx(1.0)


def test_language_weights_edge_cases() -> None:
    sharp = language_weights({"en": 10**6, "fr": 10**5}, 0.01)  # 10^600 would overflow a float
    assert sharp["en"] == pytest.approx(1.0) and sharp["fr"] == pytest.approx(0.0)
    assert language_weights({"en": 3, "sw": 0}, 2.0) == {"en": 1.0, "sw": 0.0}
    with pytest.raises(ValueError):
        language_weights({"en": 3}, 0.0)
    with pytest.raises(ValueError):
        language_weights({"en": 0}, 1.0)


# -- balanced sampler -------------------------------------------------------------------------
LANGS = ["en"] * 1000 + ["fr"] * 50 + ["de"] * 10


def test_sampler_with_large_temperature_draws_languages_about_equally() -> None:
    sampler = BalancedSampler(LANGS, temperature=1000.0, seed=0)
    drawn = [next(sampler) for _ in range(3000)]
    counts = Counter(LANGS[i] for i in drawn)
    assert set(counts) == {"en", "fr", "de"}
    assert all(850 < n < 1150 for n in counts.values()), counts
    proportional = BalancedSampler(LANGS, temperature=1.0, seed=0)
    en = sum(LANGS[next(proportional)] == "en" for _ in range(1000))
    assert en > 900  # 1000 / 1060 of the data


def test_sampler_draws_a_language_without_replacement_then_reshuffles() -> None:
    sampler = BalancedSampler(LANGS, temperature=1000.0, seed=3)
    german = [i for i in (next(sampler) for _ in range(600)) if LANGS[i] == "de"]
    assert len(german) >= 30
    passes = [german[k : k + 10] for k in range(0, 30, 10)]
    assert all(sorted(p) == list(range(1050, 1060)) for p in passes)  # each pass: all ten
    assert passes[0] != passes[1]  # a fresh shuffle


def test_sampler_resumes_exactly_from_its_state() -> None:
    uninterrupted = BalancedSampler(LANGS, 2.0, seed=7)
    expected = [next(uninterrupted) for _ in range(20)]
    first = BalancedSampler(LANGS, 2.0, seed=7)
    assert [next(first) for _ in range(10)] == expected[:10]
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    resumed = BalancedSampler(LANGS, 2.0, seed=123)  # the seed is overridden by the state
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(10)] == expected[10:]
    assert [next(BalancedSampler(LANGS, 2.0, seed=8)) for _ in range(20)] != expected
    with pytest.raises(ValueError, match="other data"):
        BalancedSampler(LANGS[:-1], 2.0, seed=7).load_state_dict(state)


# -- manifests and features -------------------------------------------------------------------
def _manifest(out: Path, lang: str, rows: list[dict[str, Any]]) -> None:
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out / "manifests" / f"{lang}.parquet", index=False)


def _row(clip_hash: str, lang: str, path: str) -> dict[str, Any]:
    return {
        "id": clip_hash[:16],
        "hash": clip_hash,
        "path": path,
        "language": lang,
        "text": "bonjour",
        "token_ids": np.array([5, 6, 7], dtype=np.int32),
    }


def test_load_training_examples_makes_audio_paths_absolute(tmp_path: Path) -> None:
    out = tmp_path / "filtered"
    h = _hashes(3)
    _manifest(out, "fr", [_row(h[0], "fr", "../store/aa/x.flac"), _row(h[1], "fr", "y.flac")])
    _manifest(out, "es", [_row(h[2], "es", "../store/cc/z.flac")])
    df = load_training_examples(out, None)
    assert sorted(df["hash"]) == sorted(h)
    by_hash = dict(zip(df["hash"], df["audio_path"], strict=True))
    assert by_hash[h[0]] == str((tmp_path / "store" / "aa" / "x.flac").resolve())
    assert by_hash[h[1]] == str((out / "y.flac").resolve())
    assert list(df.loc[df["hash"] == h[0], "token_ids"].iloc[0]) == [5, 6, 7]
    assert list(load_training_examples(out, ["es"])["hash"]) == [h[2]]
    with pytest.raises(FileNotFoundError, match="de"):
        load_training_examples(out, ["fr", "de"])
    empty = load_training_examples(tmp_path / "nothing", None)
    assert empty.empty and {"hash", "language", "token_ids", "audio_path"} <= set(empty.columns)


def test_log_mel_pads_every_clip_to_thirty_seconds(tmp_path: Path, tiny: Any) -> None:
    fe = tiny[1].feature_extractor
    paths = []
    for i, seconds in enumerate((1.0, 2.5)):
        path = tmp_path / f"{i}.wav"
        path.write_bytes(audio_bytes(tone(seconds, freq=300.0 * (i + 1))))
        paths.append(str(path))
    feats = log_mel(paths, fe)
    assert feats.shape == (2, fe.feature_size, 3000) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    alone = fe(load_audio(paths[1]), sampling_rate=16000, return_tensors="pt").input_features
    assert torch.allclose(feats[1:], alone, atol=1e-5)  # batching does not change a clip
    tone_feats = fe(tone(2.5, freq=600.0), sampling_rate=16000, return_tensors="pt")
    assert torch.allclose(feats[1:], tone_feats.input_features, atol=0.05)  # int16 in the file
    assert log_mel([], fe).shape == (0, fe.feature_size, 3000)
