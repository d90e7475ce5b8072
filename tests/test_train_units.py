"""Pure pieces of the training loop and evaluation."""

from __future__ import annotations

import math

import pytest

from distilflow.decoding.greedy import macro_mean
from distilflow.text import error_rate_corpus
from distilflow.training.loop import load_trained, lr_factor, seed_training, trained_tensors


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == 0.0
    assert lr_factor(5, 0, 10) == pytest.approx(0.5)  # no warm-up


def test_corpus_error_rate_normalises_and_skips_empty_references() -> None:
    assert error_rate_corpus("es", ["Buenos días", "[ruido]"], ["buenos dias", "algo"]) == 0.0
    assert error_rate_corpus("en", ["the cat sat down"], ["the cat"]) == pytest.approx(0.5)
    assert error_rate_corpus("ja", ["あいうえ"], ["あいうお"]) == pytest.approx(0.25)  # CER
    assert math.isnan(error_rate_corpus("en", ["[!]"], ["x"]))


def test_macro_mean_ignores_missing_languages() -> None:
    assert macro_mean({"en": 0.1, "fr": 0.3, "xx": float("nan")}) == pytest.approx(0.2)
    assert math.isnan(macro_mean({}))


def test_checkpoints_hold_the_trained_parameters_only_and_refuse_others(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import save_file

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
        m[0].requires_grad_(False)  # frozen: rebuilt identically, never saved
        return m

    trained = model()
    with torch.no_grad():
        trained[1].weight.add_(1.0)
    saved = trained_tensors(trained)
    assert set(saved) == {"1.weight", "1.bias"}
    save_file(saved, str(tmp_path / "ckpt.safetensors"))
    resumed = model()
    load_trained(resumed, tmp_path / "ckpt.safetensors")
    torch.testing.assert_close(resumed[1].weight, trained[1].weight)
    save_file({"0.weight": saved["1.weight"]}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a checkpoint of these trained parameters"):
        load_trained(model(), tmp_path / "other.safetensors")


def test_seed_training_makes_the_positional_embeddings_backward_reproducible() -> None:
    """Whisper's decoder indexes its positional embedding; on 2 CPU threads the backward of
    that gather sums in a varying order (19 of 20 repeats differed here), so two demo runs
    from scratch trained weights 2.4e-6 apart. Deterministic kernels make repeats bit-equal."""
    import torch

    was_deterministic, threads = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_num_threads(),
    )
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(448, 384, generator=generator)
    positions = torch.arange(40).repeat(32, 1)  # (batch, tokens), as the decoder indexes
    upstream = torch.randn(32, 40, 384, generator=generator)

    def gradient() -> torch.Tensor:
        weight = table.clone().requires_grad_(True)
        (weight[positions] * upstream).sum().backward()
        assert weight.grad is not None
        return weight.grad

    try:
        torch.set_num_threads(2)
        seed_training(0, deterministic=True)
        first = gradient()
        assert all(torch.equal(first, gradient()) for _ in range(10))
        seed_training(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def test_constant_schedule_holds_the_peak_after_warm_up() -> None:
    assert lr_factor(0, 10, 100, "constant") == pytest.approx(0.1)
    assert [lr_factor(s, 10, 100, "constant") for s in (10, 55, 99, 100)] == [1.0] * 4
    with pytest.raises(ValueError, match="unknown LR schedule"):
        lr_factor(50, 10, 100, "cosine")


def test_param_groups_never_decay_biases_norms_and_embeddings() -> None:
    from distilflow.testing import tiny_whisper
    from distilflow.training.loop import param_groups

    model, _ = tiny_whisper()
    model.model.encoder.requires_grad_(False)
    groups = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert "model.decoder.layers.0.fc1.weight" in decayed
    assert {"model.decoder.layers.0.fc1.bias", "model.decoder.layer_norm.weight"} <= plain
    assert "model.decoder.embed_tokens.weight" in plain
    assert not any(n.startswith("model.encoder") for n in decayed | plain)  # frozen: left out
