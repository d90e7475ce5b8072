"""The teacher's logits memoised per example: same loss as running the teacher every step."""

from __future__ import annotations

import pytest
import torch

from distilflow.testing import tiny_whisper
from distilflow.training.data import collate
from distilflow.training.losses import distillation_loss
from distilflow.training.teacher_logits import TeacherLogits, compact


def test_compact_keeps_the_softmax_at_any_temperature() -> None:
    logits = torch.randn(5, 300) * 8 + 40  # large offsets: fp16 of the raw values loses digits
    for t in (1.0, 2.0):
        torch.testing.assert_close(
            (compact(logits).float() / t).softmax(-1), (logits / t).softmax(-1), atol=1e-4, rtol=0
        )


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return tiny_whisper()[0]


def states(hashes: list[str]) -> torch.Tensor:
    return torch.stack(
        [torch.randn(1500, 64, generator=torch.Generator().manual_seed(int(h))) for h in hashes]
    )


def batch_of(rows: dict[str, list[int]]) -> dict[str, object]:
    examples = [
        {"hash": h, "decoder_input_ids": ids, "labels": [*ids[1:], 2]} for h, ids in rows.items()
    ]
    return collate(examples, pad_id=0)


def direct(teacher: torch.nn.Module, batch: dict[str, object]) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = teacher(
            encoder_outputs=(states(batch["hash"]),),  # type: ignore[arg-type]
            decoder_input_ids=batch["decoder_input_ids"],
            decoder_attention_mask=batch["decoder_attention_mask"],
        ).logits
    return out


def test_memoised_logits_give_the_same_loss_and_run_the_teacher_once(teacher) -> None:  # type: ignore[no-untyped-def]
    memo = TeacherLogits(teacher, states, budget_mb=64)
    first = batch_of({"1": [5, 6, 7, 8, 9], "2": [5, 11, 12]})
    again = batch_of({"2": [5, 11, 12], "3": [5, 13], "1": [5, 6, 7, 8, 9]})  # other padding
    for batch in (first, again):
        got = memo(batch["hash"], batch["decoder_input_ids"], batch["decoder_attention_mask"])  # type: ignore[arg-type]
        want = direct(teacher, batch)
        student = torch.randn(want.shape)
        for t in (1.0, 2.0):
            a, _ = distillation_loss(student, got, batch["labels"], 0.0, 1.0, t)  # type: ignore[arg-type]
            b, _ = distillation_loss(student, want, batch["labels"], 0.0, 1.0, t)  # type: ignore[arg-type]
            assert float(a) == pytest.approx(float(b), rel=1e-3)
    assert memo.computed == 3  # clip 1 and 2 once, clip 3 once: the repeats came from memory
    same_clip_new_tokens = batch_of({"1": [5, 6, 7]})  # another label of the same clip
    memo(
        *(same_clip_new_tokens[k] for k in ("hash", "decoder_input_ids", "decoder_attention_mask"))
    )  # type: ignore[arg-type]
    assert memo.computed == 4


def test_no_budget_runs_the_teacher_every_time_and_a_full_budget_still_answers(teacher) -> None:  # type: ignore[no-untyped-def]
    batch = batch_of({"1": [5, 6, 7, 8, 9], "2": [5, 11, 12]})
    args = (batch["hash"], batch["decoder_input_ids"], batch["decoder_attention_mask"])
    off = TeacherLogits(teacher, states, budget_mb=0)
    torch.testing.assert_close(off(*args), direct(teacher, batch))  # type: ignore[arg-type]
    off(*args)  # type: ignore[arg-type]
    assert off.computed == 4
    tiny = TeacherLogits(teacher, states, budget_mb=1e-6)  # nothing fits
    out = tiny(*args)  # type: ignore[arg-type]
    assert tiny.rows == {} and out.shape == direct(teacher, batch).shape
    with pytest.raises(ValueError, match="budget_mb"):
        TeacherLogits(teacher, states, budget_mb=-1)
