"""The offline tiny Whisper: real special-token layout, forced-language generation, saving."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from distilflow.testing import (
    save_tiny_whisper,
    tiny_tokenizer,
    tiny_whisper,
    whisper_language_codes,
)

from .helpers import tone

TASK_AND_MORE = [
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]


@pytest.fixture(scope="module")
def tiny() -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    return tiny_whisper(seed=0)


def _features(processor: WhisperProcessor, seconds: float = 1.0) -> torch.Tensor:
    feats = processor.feature_extractor(tone(seconds), sampling_rate=16000, return_tensors="pt")
    return feats.input_features  # type: ignore[no-any-return]


def test_builds_fast_and_deterministically() -> None:
    start = time.perf_counter()
    a, _ = tiny_whisper(seed=0)
    elapsed = time.perf_counter() - start
    b, _ = tiny_whisper(seed=0)
    c, _ = tiny_whisper(seed=1)
    assert elapsed < 2.0
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_whisper(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_special_tokens_follow_whisper_layout(tiny: Any) -> None:
    model, processor = tiny
    tok = processor.tokenizer
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    languages = whisper_language_codes()
    assert len(languages) == 99 and languages[0] == "en" and languages[-1] == "su"
    expected = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{c}|>" for c in languages),
        *TASK_AND_MORE,
        "<|0.00|>",
        "<|0.02|>",
    ]
    assert tok.convert_ids_to_tokens(list(range(eot, eot + len(expected)))) == expected
    assert tok.convert_ids_to_tokens(len(tok) - 1) == "<|30.00|>"
    assert len(tok) == model.config.vocab_size == eot + 107 + 1501
    assert tok.all_special_ids[-1] == tok.convert_tokens_to_ids("<|notimestamps|>")
    gen = model.generation_config
    assert gen.lang_to_id["<|fr|>"] == tok.convert_tokens_to_ids("<|fr|>")
    assert len(gen.lang_to_id) == 99 and gen.is_multilingual
    assert gen.task_to_id == {
        "translate": tok.convert_tokens_to_ids("<|translate|>"),
        "transcribe": tok.convert_tokens_to_ids("<|transcribe|>"),
    }
    assert gen.decoder_start_token_id == eot + 1 == model.config.decoder_start_token_id
    assert gen.no_timestamps_token_id == tok.convert_tokens_to_ids("<|notimestamps|>")


def test_generate_with_forced_language(tiny: Any) -> None:
    model, processor = tiny
    tok = processor.tokenizer
    first_inputs: list[list[int]] = []

    def capture(_module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not first_inputs and ids is not None:
            first_inputs.append(ids[0].tolist())

    handle = model.model.decoder.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model.generate(
                _features(processor), language="fr", task="transcribe", max_new_tokens=8
            )
    finally:
        handle.remove()
    prompt = tok.convert_ids_to_tokens(first_inputs[0])
    assert prompt == ["<|startoftranscript|>", "<|fr|>", "<|transcribe|>", "<|notimestamps|>"]
    text = processor.batch_decode(out, skip_special_tokens=True)[0]
    assert isinstance(text, str) and text.strip()
    assert out.shape[-1] >= 8


def test_tokenizer_prefix_and_timestamps() -> None:
    tok = tiny_tokenizer()
    tok.set_prefix_tokens(language="fr", task="transcribe", predict_timestamps=False)
    ids = tok("Bonjour le monde").input_ids
    assert tok.convert_ids_to_tokens(ids[:4]) == [
        "<|startoftranscript|>",
        "<|fr|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    assert tok.decode(ids, skip_special_tokens=True) == "Bonjour le monde"
    # Timestamps decode at their own value (no 2.12 s shift from unregistered specials).
    stamps = tok.convert_tokens_to_ids(["<|0.00|>", "<|1.50|>"])
    text_ids = tok(" Bonjour", add_special_tokens=False).input_ids
    decoded = tok.decode([stamps[0], *text_ids, stamps[1]], decode_with_timestamps=True)
    assert decoded == "<|0.00|> Bonjour<|1.50|>"


def test_save_tiny_whisper_round_trip(tmp_path: Path, tiny: Any) -> None:
    model, processor = tiny
    path = save_tiny_whisper(tmp_path / "tiny", seed=0)
    assert (path / "model.safetensors").is_file()
    loaded = WhisperForConditionalGeneration.from_pretrained(path, use_safetensors=True)
    proc = WhisperProcessor.from_pretrained(path)
    feats = _features(processor)
    ids = torch.tensor([[model.generation_config.decoder_start_token_id, 5, 6]])
    with torch.no_grad():
        expected = model(input_features=feats, decoder_input_ids=ids).logits
        got = loaded(input_features=feats, decoder_input_ids=ids).logits
    assert torch.equal(expected, got)
    assert loaded.generation_config.lang_to_id == model.generation_config.lang_to_id
    assert proc.tokenizer.all_special_ids == processor.tokenizer.all_special_ids
