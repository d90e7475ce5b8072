"""The experts' gates trained as served, on a tiny random Whisper: the straight-through gate,
the soft gate's noise ramp, expert dropout, the soft-gate probe, per-method learning rates and
the file that records no experts (step 0 won: the language serves the student)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from distilflow.config import ConfigError, ExpertsConfig, load_params
from distilflow.experts.schedule import gate_noise_at, loop_config, method_lr, set_training_gates
from distilflow.models.experts import (
    ExpertSpec,
    LanguageFFN,
    attach_language,
    expert_parameters,
    gate_values,
    load_experts,
    merge_language,
    read_expert_metadata,
    route_to_stage_experts,
    save_experts,
    save_no_experts,
    set_expert_dropout,
    set_gate_mode,
    set_soft_serving,
    slots_of,
    use_language,
)
from distilflow.models.gates import (
    apply_keep,
    hard_gate,
    keep_mask,
    noise_alpha,
    straight_through,
    training_gate,
)
from distilflow.student.build import make_student
from distilflow.testing import tiny_whisper

from .helpers import REPO_ROOT, read_params, write_params

SPEC = ExpertSpec("lowrank", 4, True, 8, 0.0)  # no gate dropout: train and eval forwards compare


@pytest.fixture
def student() -> Any:
    teacher, _ = tiny_whisper(seed=1, decoder_layers=4)
    model, _ = make_student(teacher, 2)
    return model


@pytest.fixture(scope="module")
def cfg() -> ExpertsConfig:
    return load_params(REPO_ROOT / "params.yaml").experts


def no_dropout(model: Any) -> None:
    model.config.dropout = 0.0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def logits(model: Any, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, model.config.num_mel_bins, 3000, generator=g)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    out: torch.Tensor = model(input_features=feats, decoder_input_ids=ids).logits
    return out


def trained_experts(student: Any) -> None:
    """Experts that differ from the shared FFN, and gates that close for part of the tokens."""
    attach_language(student, SPEC)
    torch.manual_seed(3)
    with torch.no_grad():
        for slot in slots_of(student).values():
            slot.expert.b1.add_(0.3)  # type: ignore[union-attr]
            slot.gate[-1].weight.normal_(0, 1.0)  # type: ignore[index]  # G of either sign


def test_straight_through_forward_is_the_hard_gate_and_backward_the_sigmoid() -> None:
    logit = torch.tensor([-2.0, -0.3, 0.0, 0.3, 1e-8, 2.0], requires_grad=True)
    g = straight_through(logit)
    assert torch.equal(g.detach(), hard_gate(logit.detach()))  # exactly 0/1, no rounding
    assert g.detach().tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    g.sum().backward()
    assert logit.grad is not None
    s = torch.sigmoid(logit.detach())
    torch.testing.assert_close(logit.grad, s * (1 - s))


def test_straight_through_slot_trains_the_network_it_serves(student: Any) -> None:
    trained_experts(student)
    no_dropout(student)
    set_gate_mode(student, "straight_through")
    student.eval()
    with torch.no_grad():
        served = logits(student)
    served_gates = [g.clone() for g in gate_values(student, "decoder")]
    student.train()
    train_out = logits(student)
    train_gates = gate_values(student, "decoder")
    assert all(torch.equal(a, b.detach()) for a, b in zip(served_gates, train_gates, strict=True))
    shares = [float(g.detach().mean()) for g in train_gates]
    assert any(0 < s < 1 for s in shares)  # some tokens on each path: routing is exercised
    torch.testing.assert_close(train_out, served, rtol=1e-5, atol=1e-5)
    train_out.square().mean().backward()  # gradient reaches the gates through the sigmoid
    grads = [s.gate[-1].weight.grad for s in slots_of(student).values()]  # type: ignore[index]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_soft_gate_in_training_is_not_the_served_network(student: Any) -> None:
    """The fault the straight-through gate removes: sigmoid(0) = 0.5 trains half an expert."""
    trained_experts(student)
    no_dropout(student)
    student.eval()
    with torch.no_grad():
        served = logits(student)
    student.train()  # soft mode, no noise: the old default
    with torch.no_grad():
        soft = logits(student)
    assert not torch.allclose(soft, served, rtol=1e-3, atol=1e-3)


def test_soft_serving_probe_mixes_with_sigmoid(student: Any) -> None:
    trained_experts(student)
    no_dropout(student)
    student.train()
    with torch.no_grad():
        soft_train = logits(student)  # soft mode without noise: sigmoid(G)
    student.eval()
    set_soft_serving(student, True)
    with torch.no_grad():
        probe = logits(student)
    set_soft_serving(student, False)
    torch.testing.assert_close(probe, soft_train)
    with torch.no_grad():
        assert not torch.allclose(logits(student), probe, rtol=1e-3, atol=1e-3)


def test_noise_ramp_is_linear_to_alpha_then_flat() -> None:
    assert [noise_alpha(s, 5.0, 10) for s in (0, 2, 5, 10, 40)] == [0.0, 1.0, 2.5, 5.0, 5.0]
    assert noise_alpha(3, 5.0, 0) == 5.0  # no ramp: α from the first step
    assert noise_alpha(-1, 5.0, 10) == 0.0


def test_noise_schedule_follows_the_gate_option(cfg: ExpertsConfig) -> None:
    soft = dataclasses.replace(cfg, gate="soft", gate_noise=5.0, gate_noise_steps=0, max_steps=40)
    assert [gate_noise_at(soft, s) for s in (0, 20, 40)] == [0.0, 2.5, 5.0]  # the whole run
    short = dataclasses.replace(soft, gate_noise_steps=8)
    assert gate_noise_at(short, 4) == 2.5 and gate_noise_at(short, 30) == 5.0
    st = dataclasses.replace(soft, gate="straight_through")
    assert gate_noise_at(st, 40) == 0.0  # the straight-through gate has no noise
    logit = torch.zeros(1000)
    torch.manual_seed(0)
    noisy = training_gate(logit, "soft", 5.0)
    assert float(((noisy < 0.05) | (noisy > 0.95)).float().mean()) > 0.5  # near 0/1 at α = 5


def test_keep_mask_and_apply_keep() -> None:
    assert keep_mask(6, 0.0).all()
    torch.manual_seed(0)
    assert abs(float(keep_mask(10_000, 0.3).float().mean()) - 0.7) < 0.02
    with pytest.raises(ValueError):
        keep_mask(3, 1.0)
    g = torch.ones(3, 2, 1)
    kept = apply_keep(g, torch.tensor([True, False, True]))
    assert kept[:, :, 0].tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    assert torch.equal(apply_keep(g, torch.tensor([True, False])), g)  # another batch: unchanged


def test_expert_dropout_runs_dropped_examples_on_the_shared_path() -> None:
    teacher, _ = tiny_whisper(seed=1, decoder_layers=4)
    student, _ = make_student(teacher, 2)
    attach_language(student, SPEC)
    slot: LanguageFFN = next(iter(slots_of(student).values()))
    with torch.no_grad():
        slot.expert.b1.add_(0.5)  # type: ignore[union-attr]
    set_gate_mode(student, "straight_through")  # G = 0: every gate on
    student.train()
    x = torch.randn(64, 3, slot.shared.fc1.in_features)
    with torch.no_grad():
        shared, expert = slot.shared(x), slot.run_expert(x)
        set_expert_dropout(student, 0.5)
        torch.manual_seed(0)
        out = slot(x)
    dropped = [torch.equal(out[i], shared[i]) for i in range(64)]
    kept = [torch.equal(out[i], expert[i]) for i in range(64)]
    assert all(d != k for d, k in zip(dropped, kept, strict=True))  # one path or the other
    assert 16 < sum(dropped) < 48
    assert slot.last_gate is not None and bool((slot.last_gate == 1).all())  # budget: pre-drop


def test_set_training_gates_opens_the_gates(student: Any, cfg: ExpertsConfig) -> None:
    attach_language(student, SPEC)
    opened = dataclasses.replace(cfg, gate="soft", gate_bias=3.0, expert_dropout=0.1)
    set_training_gates(student, opened)
    no_dropout(student)
    student.train()
    set_expert_dropout(student, 0.0)
    with torch.no_grad():
        logits(student)
    for g in gate_values(student, "decoder"):
        torch.testing.assert_close(g, torch.full_like(g, float(torch.sigmoid(torch.tensor(3.0)))))
    assert all(s.mode == "soft" for s in slots_of(student).values())


def test_each_method_trains_at_its_own_learning_rate(cfg: ExpertsConfig) -> None:
    rates = {"experts": 1e-4, "finetune": 2e-5, "lora": 3e-4}
    base = dataclasses.replace(cfg, lr=1e-4, finetune_lr=2e-5, lora_lr=3e-4)
    for method, lr in rates.items():
        mcfg = dataclasses.replace(base, method=method)
        assert method_lr(mcfg) == lr
        assert loop_config(mcfg).lr == lr and loop_config(mcfg).lora_lr == 3e-4


def test_published_defaults(cfg: ExpertsConfig) -> None:
    assert cfg.gate == "straight_through" and cfg.lr == 1e-4 and cfg.gate_noise == 5.0
    assert 1e-5 <= cfg.finetune_lr <= 2.5e-5 and cfg.lora_lr == 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expert_dropout": 1.0}, "expert_dropout"),
        ({"lora_lr": 0.0}, "lora_lr"),
        ({"gate": "soft", "gate_noise_steps": 10_000}, "gate_noise_steps"),
        ({"gate_noise": -1.0}, "gate_noise"),
    ],
)
def test_gate_options_are_checked(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = read_params()
    raw["experts"].update(change)
    with pytest.raises(ConfigError, match=message):
        load_params(write_params(tmp_path / "params.yaml", raw))


def test_a_file_recording_no_experts_serves_the_student(student: Any, tmp_path: Path) -> None:
    """Step 0 won: every consumer of the file (routing, the evaluation's experts model, export's
    merge) decodes with the plain student."""
    student.eval()
    with torch.no_grad():
        before = logits(student)
    lang_dir = tmp_path / "fr" / "experts"
    save_no_experts(lang_dir / "fr.safetensors", "fr", "base1", SPEC)
    meta = read_expert_metadata(lang_dir / "fr.safetensors")
    assert meta["no_experts"] and meta["language"] == "fr" and meta["spec"] == SPEC
    trained_experts(student)  # a model routed elsewhere before: routing must undo it
    assert not use_language(student, lang_dir, "fr")
    assert not expert_parameters(student)
    with torch.no_grad():
        assert torch.equal(logits(student), before)
    routed = route_to_stage_experts(tmp_path, student, "fr")  # the evaluation's "experts" model
    with torch.no_grad():
        assert torch.equal(logits(routed), before)
    assert load_experts(student, lang_dir / "fr.safetensors", base="base1") == "fr"
    with pytest.raises(ValueError, match="trained on base model base1"):
        load_experts(student, lang_dir / "fr.safetensors", base="other")
    merged = merge_language(student).eval()  # export: the plain student
    with torch.no_grad():
        assert torch.equal(logits(merged), before)


def test_trained_experts_file_still_routes(student: Any, tmp_path: Path) -> None:
    trained_experts(student)
    student.eval()
    with torch.no_grad():
        trained = logits(student)
    save_experts(student, tmp_path / "fr.safetensors", "fr", SPEC, "base1")
    assert not read_expert_metadata(tmp_path / "fr.safetensors")["no_experts"]
    fresh = make_student(tiny_whisper(seed=1, decoder_layers=4)[0], 2)[0].eval()
    assert use_language(fresh, tmp_path, "fr")
    with torch.no_grad():
        assert torch.equal(logits(fresh), trained)
