"""What a training clip learns (reference or teacher label) and which clips are dev clips."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from distilflow.training.data import is_dev_clip, split_of
from distilflow.training.targets import (
    PSEUDO,
    REFERENCE,
    TargetRule,
    clean_reference,
    reference_token_ids,
    row_target,
    target_of,
)

AUTO = TargetRule("auto", 0.1)


@pytest.mark.parametrize(
    ("policy", "reference", "label_ok", "error", "expected"),
    [
        ("pseudo", "hola", True, 0.5, PSEUDO),
        ("pseudo", "hola", False, 0.5, None),  # a dropped label is not trained on
        ("reference", "hola", True, 0.0, REFERENCE),
        ("reference", None, True, None, PSEUDO),  # no reference: the label that passed
        ("reference", None, False, None, None),
        ("auto", "hola", True, 0.05, PSEUDO),  # the teacher was right: its label
        ("auto", "hola", True, 0.1, PSEUDO),
        ("auto", "hola", True, 0.25, REFERENCE),  # above the threshold: the human text
        ("auto", "hola", False, None, REFERENCE),  # a looping label: the human text
        ("auto", "hola", True, None, REFERENCE),  # error unknown: the human text
        ("auto", None, True, None, PSEUDO),
        ("auto", "", True, None, PSEUDO),
    ],
)
def test_target_of(
    policy: Any, reference: str | None, label_ok: bool, error: float | None, expected: str | None
) -> None:
    assert target_of(reference, label_ok, error, TargetRule(policy, 0.1)) == expected


def test_references_lose_their_annotations() -> None:
    assert clean_reference("exclaimation-point [!]") == "exclaimation-point"
    assert clean_reference("Spiacente, [quello] non  è\tvalido.") == "Spiacente, non è valido."
    assert clean_reference("[!]") is None
    assert clean_reference(None) is None
    assert clean_reference(float("nan")) is None


def test_manifest_rows_of_older_filters_count_as_labels_that_passed() -> None:
    old = SimpleNamespace(reference="hola", text="Hola.")
    assert row_target(old, AUTO) == REFERENCE  # no error recorded: the reference
    new = SimpleNamespace(reference="hola", label_ok=True, teacher_error=math.nan)
    assert row_target(new, AUTO) == REFERENCE
    unlabelled = next(pd.DataFrame({"reference": [None], "label_ok": [True]}).itertuples())
    assert row_target(unlabelled, AUTO) == PSEUDO


def test_reference_tokens_follow_whispers_leading_space() -> None:
    from distilflow.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = reference_token_ids(tok, "hello there")
    assert ids == tok(" hello there", add_special_tokens=False).input_ids
    assert tok.decode(ids) == " hello there"


def test_dev_clips_need_a_reference_and_the_hash() -> None:
    hashes = [f"{i:04d}" for i in range(200)]
    dev = [h for h in hashes if split_of(h, 0.2) == "dev"]
    assert dev and all(is_dev_clip(h, "ref", 0.2) for h in dev)
    assert not any(is_dev_clip(h, None, 0.2) or is_dev_clip(h, "", 0.2) for h in dev)
    assert not any(is_dev_clip(h, "ref", 0.2) for h in hashes if h not in dev)
