"""Language-specific experts on a tiny random Whisper: exact start, routing, save/load, merge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from distilflow.models.device import count_parameters
from distilflow.models.experts import (
    ExpertSpec,
    add_expert_slots,
    attach_language,
    detach_language,
    expert_parameters,
    expert_state_dict,
    gate_values,
    load_experts,
    merge_language,
    read_expert_metadata,
    save_experts,
    slots_of,
    use_language,
)
from distilflow.student.build import make_student
from distilflow.testing import tiny_whisper

FULL = ExpertSpec("full", 4, True, 8, 0.1)
LOW = ExpertSpec("lowrank", 4, True, 8, 0.1)


@pytest.fixture
def student() -> Any:
    teacher, _ = tiny_whisper(seed=1, decoder_layers=4)
    model, _ = make_student(teacher, 2)
    return model


def logits(model: Any, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, model.config.num_mel_bins, 3000, generator=g)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        out: torch.Tensor = model(input_features=feats, decoder_input_ids=ids).logits
    return out


@pytest.mark.parametrize("spec", [FULL, LOW], ids=["full", "lowrank"])
def test_fresh_experts_decode_exactly_like_the_student(student: Any, spec: ExpertSpec) -> None:
    before = logits(student)
    attach_language(student, spec)
    layers = student.config.encoder_layers + student.config.decoder_layers
    assert len(slots_of(student)) == layers  # every encoder and decoder layer
    student.eval()
    assert torch.equal(logits(student), before)  # hard gate G = 0 >= 0: the expert, a copy
    student.train()
    student.config.dropout = 0.0
    for slot in slots_of(student).values():
        slot.gate[0].p = 0.0  # type: ignore[index]
    for m in student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    torch.testing.assert_close(logits(student), before)  # sigmoid(0) mixes two equal blocks
    gates = gate_values(student, "decoder")
    assert gates and all(torch.allclose(g, torch.full_like(g, 0.5)) for g in gates)


def test_decoder_only_slots_leave_the_encoder_alone(student: Any) -> None:
    attach_language(student, ExpertSpec("lowrank", 4, False, 8, 0.0))
    assert all(name.startswith("decoder") for name in slots_of(student))


def test_only_experts_and_gates_train_and_lowrank_is_small(student: Any) -> None:
    from distilflow.config import load_params
    from distilflow.experts.stage import prepare_model

    base = count_parameters(student)
    cfg = load_params().experts
    params = prepare_model(student, cfg)
    trainable = {id(p) for p in student.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in params} == {id(p) for p in expert_parameters(student)}
    added = count_parameters(student) - base
    assert added == sum(p.numel() for p in params)
    low = sum(p.numel() for p in params)
    other = make_student(tiny_whisper(seed=1, decoder_layers=4)[0], 2)[0]
    attach_language(other, ExpertSpec("full", cfg.rank, True, cfg.gate_width, 0.0))
    assert low < sum(p.numel() for p in expert_parameters(other))


def test_hard_gate_routes_each_token_through_one_path(student: Any) -> None:
    before = logits(student)
    attach_language(student, LOW)
    with torch.no_grad():
        for slot in slots_of(student).values():
            slot.expert.b1.add_(0.5)  # type: ignore[union-attr]  # the expert now differs
    student.eval()
    changed = logits(student)
    assert not torch.allclose(changed, before)
    with torch.no_grad():
        for slot in slots_of(student).values():
            slot.gate[-1].bias.fill_(-1.0)  # type: ignore[index]  # every gate closed
    assert torch.equal(logits(student), before)
    assert all(float(g.sum()) == 0 for g in gate_values(student, "encoder"))


def test_save_load_and_fallbacks(student: Any, tmp_path: Path) -> None:
    before = logits(student)
    attach_language(student, LOW)
    with torch.no_grad():
        for p in expert_parameters(student):
            p.add_(0.01 * torch.randn_like(p))
    student.eval()
    trained = logits(student)
    path = save_experts(student, tmp_path / "fr.safetensors", "fr", LOW, "base123")
    meta = read_expert_metadata(path)
    assert meta["language"] == "fr" and meta["spec"] == LOW and meta["base"] == "base123"
    assert set(expert_state_dict(student)) == set(
        __import__("safetensors.torch").torch.load_file(str(path))
    )

    fresh = make_student(tiny_whisper(seed=1, decoder_layers=4)[0], 2)[0].eval()
    assert use_language(fresh, tmp_path, "fr")
    assert torch.equal(logits(fresh), trained)
    assert not use_language(fresh, tmp_path, "de")  # no experts for de: the shared path
    assert torch.equal(logits(fresh), before)
    assert not use_language(fresh, tmp_path, "fr", task="translate")
    assert torch.equal(logits(fresh), before)
    with pytest.raises(ValueError, match="trained on base model base123"):
        load_experts(fresh, path, base="other")
    detach_language(fresh)


def test_merge_equals_gated_model_when_gates_are_open(student: Any) -> None:
    add_expert_slots(student)
    attach_language(student, LOW)
    with torch.no_grad():
        for slot in slots_of(student).values():
            slot.expert.b2.add_(0.05)  # type: ignore[union-attr]
            slot.gate[-1].bias.fill_(1.0)  # type: ignore[index]  # open everywhere
    student.eval()
    merged = merge_language(student).eval()
    assert not slots_of(merged)
    torch.testing.assert_close(logits(merged), logits(student), rtol=1e-4, atol=1e-4)
    assert count_parameters(merged) < count_parameters(student)
