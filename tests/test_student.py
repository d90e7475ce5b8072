"""Student creation on a tiny random Whisper: layer map, exact copies, KV cache, save/load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from distilflow.models.device import count_parameters
from distilflow.student.build import (
    SIDE_FILE,
    check_layer_ids,
    layer_map,
    make_student,
    save_student,
)
from distilflow.testing import tiny_whisper

TEACHER_LAYERS = 4


@pytest.fixture(scope="module")
def teacher() -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    return tiny_whisper(seed=1, decoder_layers=TEACHER_LAYERS)


def features(seed: int) -> torch.Tensor:
    return torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(seed))


def logits(model: WhisperForConditionalGeneration, seed: int) -> torch.Tensor:
    ids = torch.randint(0, 384, (1, 6), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out: torch.Tensor = model(input_features=features(seed), decoder_input_ids=ids).logits
    return out


def greedy(model: WhisperForConditionalGeneration, seed: int, n: int = 8) -> list[int]:
    out = model.generate(features(seed), language="fr", task="transcribe", max_new_tokens=n)
    return [int(t) for t in out[0]]


def decoder_layer(model: WhisperForConditionalGeneration, i: int) -> dict[str, torch.Tensor]:
    return model.model.decoder.layers[i].state_dict()


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [
        (6, 2, [0, 5]),
        (32, 2, [0, 31]),
        (6, 3, [0, 2, 5]),  # floor(2.5): Distil-Whisper's choice
        (8, 3, [0, 3, 7]),
        (32, 4, [0, 10, 20, 31]),
        (32, 6, [0, 6, 12, 18, 24, 31]),
        (6, 6, [0, 1, 2, 3, 4, 5]),
        (6, 1, [5]),  # the layer that feeds the output projection
        (1, 1, [0]),
    ],
)
def test_layer_map(n: int, k: int, expected: list[int]) -> None:
    assert layer_map(n, k) == expected


def test_layer_map_matches_distil_whisper_on_whisper_depths() -> None:
    """Distil-Whisper: np.linspace(0, n - 1, k, dtype=int) with the last forced to n - 1."""
    for n in (2, 4, 6, 12, 24, 32):
        for k in range(1, n + 1):
            ref = np.linspace(0, n - 1, k, dtype=int)
            ref[-1] = n - 1
            ids = layer_map(n, k)
            assert ids == ref.tolist() and ids == sorted(set(ids)), (n, k)
    # where float rounding makes numpy's map repeat or skip, the exact map stays spaced
    assert layer_map(31, 23)[11] == 15  # numpy: 14


def test_layer_map_minus_one_keeps_every_layer() -> None:
    assert layer_map(6, -1) == [0, 1, 2, 3, 4, 5] and layer_map(32, -1) == list(range(32))


@pytest.mark.parametrize(("n", "k"), [(6, 0), (6, 7), (6, -2), (0, 1)])
def test_layer_map_refuses_impossible_sizes(n: int, k: int) -> None:
    with pytest.raises(ValueError, match=r"between 1 and|at least one"):
        layer_map(n, k)


def test_check_layer_ids() -> None:
    assert check_layer_ids([5, 0, 2], 6) == [0, 2, 5]
    assert check_layer_ids((np.int64(3),), 6) == [3]
    with pytest.raises(ValueError, match="more than once"):
        check_layer_ids([0, 2, 2], 6)
    with pytest.raises(ValueError, match=r"\[6\] outside the teacher's layers 0..5"):
        check_layer_ids([0, 6], 6)
    with pytest.raises(ValueError, match="outside"):
        check_layer_ids([-1, 3], 6)
    with pytest.raises(ValueError, match="empty"):
        check_layer_ids([], 6)
    with pytest.raises(ValueError, match="integers"):
        check_layer_ids([0.5, 2], 6)  # type: ignore[list-item]


def test_full_depth_student_reproduces_the_teacher(
    teacher: tuple[WhisperForConditionalGeneration, WhisperProcessor],
) -> None:
    model = teacher[0]
    student, ids = make_student(model, TEACHER_LAYERS)
    assert ids == list(range(TEACHER_LAYERS))
    for seed in (0, 1):
        assert torch.equal(logits(student, seed), logits(model, seed))
    assert greedy(student, 2) == greedy(model, 2)
    assert count_parameters(student) == count_parameters(model)


def test_two_layer_student_copies_first_and_last_layer(
    teacher: tuple[WhisperForConditionalGeneration, WhisperProcessor],
) -> None:
    model = teacher[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    student, ids = make_student(model, 2)
    assert ids == [0, TEACHER_LAYERS - 1]
    assert student.config.decoder_layers == 2 and model.config.decoder_layers == TEACHER_LAYERS
    for new, old in enumerate(ids):
        got, want = decoder_layer(student, new), decoder_layer(model, old)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
    shared = {k: v for k, v in student.state_dict().items() if ".decoder.layers." not in k}
    teacher_state = model.state_dict()
    assert all(torch.equal(v, teacher_state[k]) for k, v in shared.items())
    assert student.proj_out.weight is student.model.decoder.embed_tokens.weight  # still tied
    assert count_parameters(student) < count_parameters(model)
    # the teacher is untouched and shares no storage with the student
    with torch.no_grad():
        student.model.encoder.layers[0].fc1.weight.add_(1.0)
        student.model.decoder.layers[1].fc1.weight.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.config.decoder_layers == TEACHER_LAYERS


@pytest.mark.parametrize("layers", [2, [1, 2], [3]])
def test_student_generates_with_the_kv_cache(
    teacher: tuple[WhisperForConditionalGeneration, WhisperProcessor], layers: int | list[int]
) -> None:
    student, ids = make_student(teacher[0], layers)
    attention = [layer.self_attn.layer_idx for layer in student.model.decoder.layers]
    assert attention == list(range(len(ids)))  # renumbered, as the cache expects
    out = greedy(student, 3, n=6)  # IndexError here if layer_idx kept the teacher's numbers
    assert 0 < len(out) <= 6
    heads = student.generation_config.alignment_heads
    assert heads and all(0 <= layer < len(ids) for layer, _ in heads)


def test_frozen_teacher_gives_a_trainable_student() -> None:
    frozen, _ = tiny_whisper(seed=1, decoder_layers=TEACHER_LAYERS)
    frozen.requires_grad_(False)
    student, _ = make_student(frozen, 2)
    fixed = [n for n, p in student.named_parameters() if not p.requires_grad]
    assert fixed == ["model.encoder.embed_positions.weight"]  # sinusoidal, frozen by Whisper


def test_frozen_embeddings_freeze_the_tied_output_layer_too(tmp_path: Path) -> None:
    from distilflow.config import load_params
    from distilflow.student.stage import make_student_on
    from distilflow.training.loop import trained_tensors

    teacher, _ = tiny_whisper(seed=1, decoder_layers=TEACHER_LAYERS)
    shipped = load_params("params.yaml").student
    assert shipped.freeze_embeddings
    # the shipped recipe trains the encoder's top 2 layers and norms; the cut-decoder one, the
    # decoder on the frozen encoder: neither trains the embeddings or the tied output layer
    cut = dataclasses.replace(shipped, decoder_layers=2, freeze_encoder=True, freeze_decoder=False)
    for cfg, trains in ((shipped, "model.encoder.layers.1.fc1.weight"),
                        (cut, "model.decoder.layers.0.fc1.weight")):  # fmt: skip
        student, _ = make_student_on(cfg, teacher, tmp_path, torch.device("cpu"))
        assert student.proj_out.weight is student.model.decoder.embed_tokens.weight  # tied
        assert not student.proj_out.weight.requires_grad
        trained = set(trained_tensors(student))
        assert not any("embed" in n or "proj_out" in n for n in trained)
        assert trains in trained
    assert not any(n.startswith("model.decoder") for n in trained_tensors(
        make_student_on(shipped, teacher, tmp_path, torch.device("cpu"))[0]))  # fmt: skip


def test_save_and_load_round_trip(
    teacher: tuple[WhisperForConditionalGeneration, WhisperProcessor], tmp_path: Path
) -> None:
    model, processor = teacher
    student, ids = make_student(model, 2)
    dst = save_student(student, processor, tmp_path / "student", {"step": 7, "dev_wer": 0.5})
    side = json.loads((dst / SIDE_FILE).read_text(encoding="utf-8"))
    assert side == {
        "layer_ids": ids,
        "teacher_layers": TEACHER_LAYERS,
        "teacher_id": None,  # tiny_whisper has no name or path
        "audio_context": "padded",  # unrecorded on the config: Whisper's 30 s window
        "context_multiple_s": None,
        "feature_padding": "audio",  # this processor is transformers' own: it pads the audio
        "step": 7,
        "dev_wer": 0.5,
    }
    loaded = WhisperForConditionalGeneration.from_pretrained(dst)
    loaded.eval()  # type: ignore[no-untyped-call]
    assert loaded.config.decoder_layers == 2
    assert loaded.config.distilflow_student["layer_ids"] == ids
    for seed in (0, 1):
        assert torch.equal(logits(loaded, seed), logits(student, seed))
    assert greedy(loaded, 4) == greedy(student, 4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left
    with pytest.raises(FileExistsError):
        save_student(student, processor, dst, {})


def test_info_overrides_the_record_and_unknown_provenance_is_null(
    teacher: tuple[WhisperForConditionalGeneration, WhisperProcessor], tmp_path: Path
) -> None:
    model, processor = teacher
    student, _ = make_student(model, 2)
    dst = save_student(student, processor, tmp_path / "a", {"teacher_id": "sha256:abc"})
    assert json.loads((dst / SIDE_FILE).read_text(encoding="utf-8"))["teacher_id"] == "sha256:abc"
    dst = save_student(model, processor, tmp_path / "b", {})  # not made by make_student
    side = json.loads((dst / SIDE_FILE).read_text(encoding="utf-8"))
    assert side == {
        "layer_ids": None,
        "teacher_layers": None,
        "teacher_id": None,
        "audio_context": "padded",
        "context_multiple_s": None,
        "feature_padding": "audio",
    }
