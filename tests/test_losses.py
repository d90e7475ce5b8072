"""Distillation losses against hand (numpy) computations on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distilflow.training.losses import (
    IGNORE,
    distillation_loss,
    masked_cross_entropy,
    masked_js,
    masked_kl,
)

B, T, V = 2, 3, 5


def logits(seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(B, T, V, generator=g, dtype=torch.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl_np(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(-1)


# position (0, 2) and (1, 0) are padding
LABELS = torch.tensor([[1, 4, IGNORE], [IGNORE, 0, 2]])
MASK = LABELS != IGNORE


def test_cross_entropy_is_the_mean_over_real_tokens() -> None:
    x = logits(0)
    p = softmax(x.numpy())
    real = [(0, 0, 1), (0, 1, 4), (1, 1, 0), (1, 2, 2)]
    expected = -np.mean([np.log(p[b, t, y]) for b, t, y in real])
    assert float(masked_cross_entropy(x, LABELS)) == pytest.approx(expected, rel=1e-6)


def test_kl_is_teacher_to_student_times_t_squared() -> None:
    s, t = logits(1), logits(2)
    for temp in (1.0, 2.0, 0.5):
        p = softmax(t.numpy() / temp)  # teacher
        q = softmax(s.numpy() / temp)  # student
        expected = temp**2 * kl_np(p, q)[MASK.numpy()].mean()
        assert float(masked_kl(s, t, MASK, temp)) == pytest.approx(expected, rel=1e-5)
    # the direction matters: KL(teacher || student), not the reverse
    reverse = kl_np(softmax(s.numpy()), softmax(t.numpy()))[MASK.numpy()].mean()
    assert float(masked_kl(s, t, MASK, 1.0)) != pytest.approx(reverse, rel=1e-3)


def test_t_squared_scaling() -> None:
    s, t = logits(3), logits(4)
    soft = float(masked_kl(s / 2.0, t / 2.0, MASK, 1.0))  # the same softened distributions
    assert float(masked_kl(s, t, MASK, 2.0)) == pytest.approx(4.0 * soft, rel=1e-6)


def test_kl_of_a_distribution_with_itself_is_zero() -> None:
    x = logits(5)
    assert float(masked_kl(x, x.clone(), MASK, 2.0)) == pytest.approx(0.0, abs=1e-12)
    assert float(masked_js(x, x.clone(), MASK)) == pytest.approx(0.0, abs=1e-12)


def test_padding_positions_change_nothing() -> None:
    s, t = logits(6), logits(7)
    s2, t2 = s.clone(), t.clone()
    s2[~MASK] = 1e4 * torch.randn(int((~MASK).sum()), V, dtype=torch.float64)
    t2[~MASK] = float("nan")
    assert torch.equal(masked_kl(s, t, MASK, 2.0), masked_kl(s2, t2, MASK, 2.0))
    assert torch.equal(masked_js(s, t, MASK), masked_js(s2, t2, MASK))
    assert torch.equal(masked_cross_entropy(s, LABELS), masked_cross_entropy(s2, LABELS))
    no_tokens = torch.zeros(B, T, dtype=torch.bool)
    assert float(masked_kl(s, t, no_tokens, 1.0)) == 0.0  # not NaN
    assert float(masked_cross_entropy(s, torch.full((B, T), IGNORE))) == 0.0


def test_js_matches_numpy_is_symmetric_and_at_most_ln2() -> None:
    s, t = logits(8), logits(9)
    p, q = softmax(t.numpy()), softmax(s.numpy())
    m = (p + q) / 2
    expected = (0.5 * kl_np(p, m) + 0.5 * kl_np(q, m))[MASK.numpy()].mean()
    assert float(masked_js(s, t, MASK)) == pytest.approx(expected, rel=1e-6)
    assert float(masked_js(s, t, MASK)) == pytest.approx(float(masked_js(t, s, MASK)), rel=1e-12)
    # disjoint one-hot distributions reach the bound; nothing exceeds it
    far = torch.full((B, T, V), -1e4, dtype=torch.float64)
    far_t = far.clone()
    far[..., 0], far_t[..., 1] = 0.0, 0.0
    assert float(masked_js(far, far_t, MASK)) == pytest.approx(math.log(2), rel=1e-9)
    for seed in range(10):
        assert float(masked_js(logits(seed, 20.0), logits(seed + 100, 20.0), MASK)) <= math.log(2)


def test_teacher_logits_may_hold_minus_infinity() -> None:
    s, t = logits(10), logits(11)
    t[..., 3] = -math.inf  # a suppressed token
    s.requires_grad_(True)
    kl = masked_kl(s, t, MASK, 1.0)
    js = masked_js(s, t, MASK)
    (kl + js).backward()  # type: ignore[no-untyped-call]
    assert math.isfinite(kl.item()) and math.isfinite(js.item())
    assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("divergence", ["kl", "js"])
def test_distillation_loss_combines_parts_and_only_the_student_learns(divergence: str) -> None:
    s = logits(12).requires_grad_(True)
    t = logits(13).requires_grad_(True)
    total, parts = distillation_loss(s, t, LABELS, 0.8, 1.5, 2.0, divergence)  # type: ignore[arg-type]
    ce = masked_cross_entropy(s, LABELS).item()
    div = (masked_kl(s, t, MASK, 2.0) if divergence == "kl" else masked_js(s, t, MASK, 2.0)).item()
    assert parts == pytest.approx({"loss": 0.8 * ce + 1.5 * div, "ce": ce, divergence: div})
    assert total.item() == pytest.approx(parts["loss"])
    total.backward()  # type: ignore[no-untyped-call]
    assert t.grad is None
    assert s.grad is not None
    assert torch.all(s.grad[~MASK] == 0) and torch.any(s.grad[MASK] != 0)


def test_bad_arguments_are_refused() -> None:
    s, t = logits(14), logits(15)
    with pytest.raises(ValueError, match="divergence"):
        distillation_loss(s, t, LABELS, 1.0, 1.0, 1.0, "mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        masked_kl(s, t, MASK, 0.0)
    with pytest.raises(ValueError, match="differ"):
        masked_kl(s, t[:, :2], MASK, 1.0)
    with pytest.raises(ValueError, match="mask"):
        masked_js(s, t, MASK[:, :2])


def test_half_precision_logits_are_computed_in_float32() -> None:
    s, t = logits(16).to(torch.bfloat16), logits(17).to(torch.float16)
    s32, t32 = s.float(), t.float()
    assert masked_kl(s, t.to(torch.bfloat16), MASK, 2.0).dtype == torch.float32
    assert float(masked_js(s, t.to(torch.bfloat16), MASK)) == pytest.approx(
        float(masked_js(s32, t32.to(torch.bfloat16).float(), MASK)), rel=1e-6
    )
    assert masked_cross_entropy(t, LABELS).dtype == torch.float32


def test_hidden_states_mse_on_masked_positions_of_paired_layers() -> None:
    from distilflow.training.losses import hidden_states_mse

    g = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 3, 4, generator=g, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(2, 3, 4, generator=g) for _ in range(4)]
    mask = torch.tensor([[True, True, False], [True, False, False]])
    got = hidden_states_mse(student, teacher, [(1, 1), (2, 3)], mask)
    want = sum(((student[s] - teacher[t]) ** 2)[mask].mean() for s, t in [(1, 1), (2, 3)]) / 2
    assert torch.allclose(got, want)
    got.backward()
    assert student[0].grad is None and student[1].grad is not None
    assert float(hidden_states_mse(student, teacher, [], mask)) == 0.0
    with pytest.raises(ValueError, match="must match"):
        hidden_states_mse(student, [t[:, :2] for t in teacher], [(1, 1)], mask)
