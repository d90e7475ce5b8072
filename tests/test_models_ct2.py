"""CTranslate2 model.bin reading/writing and conversion to transformers, on the tiny Whisper."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from distilflow.decoding.ct2 import ct2_greedy
from distilflow.decoding.generate_args import ct2_max_length
from distilflow.models.convert import convert_ct2_dir, load_ct2_dir
from distilflow.models.ct2 import (
    Ct2FormatError,
    ct2_to_hf_state_dict,
    float_variables,
    infer_dims,
    read_ct2_model,
    write_ct2_model,
)
from distilflow.testing import tiny_whisper, write_ct2_dir

PROMPT = ["<|startoftranscript|>", "<|fr|>", "<|transcribe|>", "<|notimestamps|>"]


@pytest.fixture(scope="module")
def tiny() -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    return tiny_whisper(seed=3)


@pytest.fixture(scope="module")
def tiny_ct2(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ct2_dir(*tiny, tmp_path_factory.mktemp("ct2"))


def _features(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randn(1, 80, 3000).astype(np.float32))


def _logits(model: WhisperForConditionalGeneration, tok: Any) -> torch.Tensor:
    ids = torch.tensor([[*tok.convert_tokens_to_ids(PROMPT), 10, 20, 30]])
    with torch.no_grad():
        return model(input_features=_features(), decoder_input_ids=ids).logits  # type: ignore[no-any-return]


def test_read_back_what_was_written(tiny_ct2: Path) -> None:
    ct2 = read_ct2_model(tiny_ct2 / "model.bin")
    assert (ct2.version, ct2.spec, ct2.revision) == (6, "WhisperSpec", 3)
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    dims = infer_dims(ct2)
    assert (dims.d_model, dims.encoder_layers, dims.decoder_layers) == (64, 2, 2)
    assert (dims.encoder_heads, dims.n_mels, dims.max_source_positions) == (4, 80, 1500)
    assert ct2.variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (192, 64)
    k_bias = ct2.variables["encoder/layer_0/self_attention/linear_0/bias"][64:128]
    assert not k_bias.any()


def test_round_trip_gives_identical_logits(tiny: Any, tiny_ct2: Path) -> None:
    model, processor = tiny
    converted, conv_processor = load_ct2_dir(tiny_ct2)
    state = ct2_to_hf_state_dict(read_ct2_model(tiny_ct2 / "model.bin"))
    assert set(state) == set(model.state_dict())
    assert torch.equal(_logits(model, processor.tokenizer), _logits(converted, processor.tokenizer))
    gen, orig = converted.generation_config, model.generation_config
    assert gen.lang_to_id == orig.lang_to_id and gen.task_to_id == orig.task_to_id
    assert gen.no_timestamps_token_id == orig.no_timestamps_token_id
    assert gen.alignment_heads == orig.alignment_heads
    assert conv_processor.tokenizer.all_special_ids == processor.tokenizer.all_special_ids


def test_float16_file_is_close(tiny: Any, tmp_path: Path) -> None:
    model, processor = tiny
    src = write_ct2_dir(model, processor, tmp_path / "f16", dtype="float16")
    assert (
        read_ct2_model(src / "model.bin").variables["decoder/embeddings/weight"].dtype == np.float16
    )
    converted, _ = load_ct2_dir(src)
    diff = (_logits(model, processor.tokenizer) - _logits(converted, processor.tokenizer)).abs()
    assert diff.max().item() < 1e-2


def test_convert_dir_saves_loadable_safetensors(tiny: Any, tiny_ct2: Path, tmp_path: Path) -> None:
    model, processor = tiny
    dst = convert_ct2_dir(tiny_ct2, tmp_path / "hf")
    assert (dst / "model.safetensors").is_file() and (dst / "generation_config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    loaded = WhisperForConditionalGeneration.from_pretrained(dst, use_safetensors=True)
    assert torch.equal(_logits(model, processor.tokenizer), _logits(loaded, processor.tokenizer))
    with pytest.raises(FileExistsError):
        convert_ct2_dir(tiny_ct2, dst)


def test_vocabulary_json_alone_rebuilds_the_tokenizer(tiny: Any, tmp_path: Path) -> None:
    model, processor = tiny
    src = write_ct2_dir(model, processor, tmp_path / "ct2")
    (src / "tokenizer.json").unlink()
    _, rebuilt = load_ct2_dir(src)
    for text in ["Bonjour le monde, ceci est un test.", " Привет, мир!", "Hello tone 42"]:
        assert rebuilt.tokenizer(text).input_ids == processor.tokenizer(text).input_ids
    assert rebuilt.tokenizer.all_special_ids == processor.tokenizer.all_special_ids


def test_ctranslate2_runtime_reads_the_written_file(tiny: Any, tiny_ct2: Path) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    model, processor = tiny
    runtime = ctranslate2.models.Whisper(str(tiny_ct2), device="cpu", compute_type="float32")
    feats = _features(1)
    encoded = np.array(runtime.encode(ctranslate2.StorageView.from_array(feats.numpy())))
    with torch.no_grad():
        expected = model.model.encoder(feats).last_hidden_state.numpy()
    assert np.abs(encoded - expected).max() < 1e-4
    prompt = processor.tokenizer.convert_tokens_to_ids(PROMPT)
    storage = ctranslate2.StorageView.from_array(feats.numpy())
    ct2_ids = runtime.generate(storage, [prompt], beam_size=1, max_length=16)[0].sequences_ids[0]
    with torch.no_grad():
        hf_ids = model.generate(feats, language="fr", task="transcribe", max_new_tokens=16)
    assert len(ct2_ids) >= 5
    assert hf_ids[0].tolist()[: len(ct2_ids)] == ct2_ids


def ctranslate2_new_tokens(max_length: int, prompt_length: int) -> int:
    """How many tokens CTranslate2 4.x's Whisper decodes at most (its whisper.cc)."""
    return min(max_length // 2, max_length - prompt_length)


@pytest.mark.parametrize("prompt_length", [3, 4, 40])
def test_ct2_max_length_gives_the_whole_budget(prompt_length: int) -> None:
    for budget in (1, 2, 63, 128, 224, 225, 300, 448 - prompt_length):
        length = ct2_max_length(prompt_length, budget)
        assert ctranslate2_new_tokens(length, prompt_length) == budget
    # the budget is capped so that prompt and tokens fit in Whisper's 448 positions
    cap = ct2_max_length(prompt_length, 10_000)
    assert ctranslate2_new_tokens(cap, prompt_length) == 448 - prompt_length
    for bad in ((0, 5), (prompt_length, 0), (448, 5)):
        with pytest.raises(ValueError, match="out of range"):
            ct2_max_length(*bad)


def test_ct2_greedy_decodes_the_budget_torch_does(tiny: Any, tiny_ct2: Path) -> None:
    """The consumer's CTranslate2 path decodes as many tokens as transformers under the same
    budget, the same ones (float32): not half of them, as ``max_length`` = prompt + budget
    gave (a 16 s French prompt cut after 66 of its 79 tokens)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    model, processor = tiny
    runtime = ctranslate2.models.Whisper(str(tiny_ct2), device="cpu", compute_type="float32")
    prompt = processor.tokenizer.convert_tokens_to_ids(PROMPT)
    feats = _features(2)
    eot = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for budget in (3, 40, 300):
        got = ct2_greedy(runtime, feats, [prompt], budget)[0]
        with torch.no_grad():
            ids = model.generate(feats, language="fr", task="transcribe", max_new_tokens=budget)
        expected = ids[0].tolist()[-budget:]  # the prompt, when it is returned, left out
        assert eot not in expected
        assert got == expected
        assert len(got) == budget  # a random model does not end: the budget is what stops it


def test_int8_and_bfloat16_variables(tmp_path: Path) -> None:
    weight = np.array([[0.5, -1.0], [0.25, 0.125]], dtype=np.float32)
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    quantized = np.rint(weight * scale[:, None]).astype(np.int8)
    path = tmp_path / "model.bin"
    write_ct2_model(path, {"a/weight": quantized, "a/weight_scale": scale})
    ct2 = read_ct2_model(path)
    np.testing.assert_allclose(float_variables(ct2)["a/weight"], weight, atol=1e-2)
    # bfloat16 (dtype id 5) is widened to float32 exactly.
    bf16 = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype("<u2")
    path.write_bytes(_one_variable_file("b", 5, (2,), bf16.tobytes()))
    np.testing.assert_array_equal(read_ct2_model(path).variables["b"], [1.5, -2.0])


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _one_variable_file(name: str, dtype: int, shape: tuple[int, ...], data: bytes) -> bytes:
    head = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, 1)
    var = (
        _string(name)
        + struct.pack("<B", len(shape))
        + b"".join(struct.pack("<I", d) for d in shape)
    )
    return head + var + struct.pack("<BI", dtype, len(data)) + data + struct.pack("<I", 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (struct.pack("<I", 5) + _string("WhisperSpec"), "unsupported CTranslate2 format version 5"),
        (_one_variable_file("x", 0, (4,), b"\0" * 8), "do not fill shape"),
        (_one_variable_file("x", 9, (1,), b"\0" * 4), "unsupported dtype id 9"),
        (_one_variable_file("x", 0, (1,), b"\0" * 4)[:-6], "truncated"),
        (_one_variable_file("x", 0, (1,), b"\0" * 4) + b"junk", "trailing bytes"),
    ],
)
def test_malformed_files_name_the_file_and_reason(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(Ct2FormatError, match=message) as info:
        read_ct2_model(path)
    assert str(path) in str(info.value)


def test_non_whisper_models_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    write_ct2_model(path, {"encoder/foo": np.zeros(2, np.float32)}, spec="TransformerSpec")
    with pytest.raises(Ct2FormatError, match="is not 'WhisperSpec'"):
        ct2_to_hf_state_dict(read_ct2_model(path))
    (tmp_path / "config.json").write_text(json.dumps({}))
    with pytest.raises(Ct2FormatError, match="not a Whisper model"):
        load_ct2_dir(tmp_path)
    with pytest.raises(Ct2FormatError, match=r"no model\.bin"):
        load_ct2_dir(tmp_path / "missing")
