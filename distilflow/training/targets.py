"""What each training clip's decoder learns: the human reference or the teacher's label.

The filter stage keeps a clip when its teacher label passes (``label_ok``) or when it has a
usable human reference; ``teacher_error`` is the label's WER/CER against that reference. The
policy (``student.targets``, ``experts.targets``):

- ``pseudo``: the teacher's label, only where it passed the filter (Distil-Whisper's recipe);
- ``reference``: the human reference wherever there is one, else the label that passed;
- ``auto``: the reference where the teacher's error on it is above ``auto_max_error`` (or its
  label was dropped), the teacher's label otherwise. Distil-Whisper's advice above about 20%
  teacher WER is to train on the original text; a label the filter would keep stays.

Clips without a reference always learn the teacher's label (which passed the confidence rule).
The distillation term is teacher-forced on the same tokens, whichever they are. Pure functions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

Target = Literal["reference", "pseudo"]
REFERENCE: Final = "reference"
PSEUDO: Final = "pseudo"
_ANNOTATION = re.compile(r"\[[^\]]*\]")  # "at [@]": what the speaker did not say, as Whisper's
_SPACES = re.compile(r"\s+")  # normalisers drop it before scoring


@dataclass(frozen=True)
class TargetRule:
    """``targets``, ``auto_max_error`` and the timestamp options of a training section."""

    policy: Literal["reference", "pseudo", "auto"]
    auto_max_error: float = 0.1
    timestamp_share: float = 0.0  # clips trained with timestamp tokens (training/timestamps.py)
    window_s: float = 0.0  # > 0: those clips packed into windows of a voice (training/packing.py)
    gap_s: float = 0.0  # silence between two packed clips


def rule_of(cfg: Any) -> TargetRule:
    """The rule of a training section (``student`` or ``experts``)."""
    return TargetRule(
        cfg.targets,
        cfg.auto_max_error,
        cfg.timestamp_share,
        cfg.timestamp_window_s,
        cfg.timestamp_gap_s,
    )


def target_of(
    reference: str | None, label_ok: bool, teacher_error: float | None, rule: TargetRule
) -> Target | None:
    """The text one clip trains on, or None when it has none under ``rule``. Pure.

    ``reference`` is the clip's cleaned human text (None or empty: none), ``label_ok`` whether
    the teacher's label passed the filter, ``teacher_error`` that label's error (None: unknown).
    """
    has_reference = bool(reference)
    if rule.policy == PSEUDO or not has_reference:
        return PSEUDO if label_ok else None
    if rule.policy == REFERENCE or not label_ok:
        return REFERENCE
    if teacher_error is None or teacher_error > rule.auto_max_error:
        return REFERENCE
    return PSEUDO


def clean_reference(text: Any) -> str | None:
    """A human reference as a decoder target: bracketed annotations dropped, spaces collapsed;
    None when nothing is left (or there was no text). Pure."""
    if not isinstance(text, str):
        return None
    cleaned = _SPACES.sub(" ", _ANNOTATION.sub(" ", text)).strip()
    return cleaned or None


def row_target(row: Any, rule: TargetRule) -> Target | None:
    """``target_of`` a manifest row (``reference``, ``label_ok``, ``teacher_error``; a manifest
    written before those columns holds only labels that passed). Pure."""
    label_ok = bool(getattr(row, "label_ok", True))
    error = getattr(row, "teacher_error", None)
    error = None if error is None or (isinstance(error, float) and math.isnan(error)) else error
    return target_of(clean_reference(row.reference), label_ok, error, rule)


def reference_token_ids(tokenizer: Any, reference: str) -> list[int]:
    """The tokens of a reference as Whisper writes a transcript: after a space, no specials."""
    ids: list[int] = tokenizer(" " + reference, add_special_tokens=False).input_ids
    return [int(i) for i in ids]
