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


def test_examples_take_their_targets_and_the_dev_split_ignores_the_filter() -> None:
    from distilflow.testing import tiny_whisper
    from distilflow.training.states import build_examples

    model, processor = tiny_whisper()
    gen, tok = model.generation_config, processor.tokenizer
    dev_hash = next(f"{i:04d}" for i in range(200) if split_of(f"{i:04d}", 0.5) == "dev")
    train_hashes = [f"{i:04d}" for i in range(200) if split_of(f"{i:04d}", 0.5) == "train"]
    label = tok(" wrong words", add_special_tokens=False).input_ids
    rows = [
        # the teacher's label failed (a loop, say): a dev clip all the same, scored on its text
        (dev_hash, "hello there", False, None),
        (train_hashes[0], "hello there", False, None),  # failed label: learns the reference
        (train_hashes[1], "hello there", True, 0.05),  # the teacher was right: its label
        (train_hashes[2], "hello there", True, 0.5),  # the teacher was wrong: the reference
        (train_hashes[3], None, True, None),  # no reference: its label
    ]
    df = pd.DataFrame(
        {
            "hash": [r[0] for r in rows],
            "language": "fr",
            "reference": [r[1] for r in rows],
            "label_ok": [r[2] for r in rows],
            "teacher_error": [r[3] for r in rows],
            "token_ids": [label] * len(rows),
        }
    )
    train, dev, kinds, _ = build_examples(df, gen, int(gen.eos_token_id), 0.5, tok, AUTO)
    assert [(c.hash, c.reference) for c in dev] == [(dev_hash, "hello there")]
    assert kinds == {REFERENCE: 2, PSEUDO: 2}
    reference = reference_token_ids(tok, "hello there")
    learnt = {e.hash: e.labels[3:-1] for e in train}  # after the scored prompt, before EOT
    assert learnt == {
        train_hashes[0]: reference,
        train_hashes[1]: label,
        train_hashes[2]: reference,
        train_hashes[3]: label,
    }
    pseudo_only = build_examples(df, gen, int(gen.eos_token_id), 0.5, tok, TargetRule("pseudo"))
    assert {e.hash for e in pseudo_only[0]} == {train_hashes[1], train_hashes[2], train_hashes[3]}


def test_timestamp_rules() -> None:
    from distilflow.training.timestamps import has_timestamps, text_tokens, timestamped_target

    hashes = [f"{i:04d}" for i in range(2000)]
    share = sum(has_timestamps(h, 0.2) for h in hashes) / len(hashes)
    assert 0.17 < share < 0.23  # about the share, by hash: the same clips every time
    assert not any(has_timestamps(h, 0.0) for h in hashes)
    assert all(has_timestamps(h, 1.0) for h in hashes)
    begin = 100  # timestamp ids are >= 100 here
    label = [100, 5, 6, 150, 150, 7, 8, 175]  # two segments: <|0.00|> 5 6 <|1.00|> ...
    assert text_tokens(label, begin) == [5, 6, 7, 8]
    assert timestamped_target(label, begin) == label
    assert timestamped_target(label, begin, [9, 10]) == [100, 9, 10, 175]  # one segment
    assert timestamped_target([5, 6], begin) is None  # a label without timestamps


def test_timestamped_examples() -> None:
    """With label.timestamps, a share of the clips trains behind the prompt without
    <|notimestamps|> on timestamped tokens; the others on the text alone."""
    from distilflow.testing import tiny_whisper
    from distilflow.training.states import build_examples
    from distilflow.training.timestamps import has_timestamps

    model, processor = tiny_whisper()
    gen, tok = model.generation_config, processor.tokenizer
    begin = int(gen.no_timestamps_token_id) + 1
    hashes = [f"{i:04d}" for i in range(40) if split_of(f"{i:04d}", 0.01) == "train"]
    text = tok(" some words", add_special_tokens=False).input_ids
    label = [begin, *text, begin + 60]
    df = pd.DataFrame(
        {
            "hash": hashes,
            "language": "fr",
            "reference": [None, "hello there"] * (len(hashes) // 2) + [None] * (len(hashes) % 2),
            "label_ok": True,
            "teacher_error": [None, 0.5] * (len(hashes) // 2) + [None] * (len(hashes) % 2),
            "token_ids": [label] * len(hashes),
        }
    )
    rule = TargetRule("auto", 0.1, timestamp_share=0.5)
    train, _, kinds, windows = build_examples(df, gen, int(gen.eos_token_id), 0.01, tok, rule)
    assert windows == []  # window_s 0: each clip alone
    reference = reference_token_ids(tok, "hello there")
    stamped = [h for h in hashes if has_timestamps(h, 0.5)]
    assert kinds["timestamps"] == len(stamped) > 0
    no_ts = int(gen.no_timestamps_token_id)
    for e, ref in zip(train, df.sort_values("hash")["reference"], strict=True):
        ref = isinstance(ref, str)  # pandas holds a missing reference as NaN
        body = e.labels[2:-1]  # after <|fr|><|transcribe|>, before EOT
        if e.hash in stamped:
            assert no_ts not in e.decoder_input_ids
            assert body == ([begin, *reference, begin + 60] if ref else label)
        else:
            assert body == [no_ts, *(reference if ref else text)]
