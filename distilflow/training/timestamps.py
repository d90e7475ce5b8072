"""Timestamp tokens in training targets, so that a student can decode long audio with times.

Long-form decoding (distilflow/decoding/longform.py) moves its 30 s window to the end of the last
complete segment, which the model marks with timestamp tokens (``<|0.00|>`` ... ``<|30.00|>``,
every 20 ms). A student trained only behind ``<|notimestamps|>`` never learns them. Distil-Whisper
keeps the teacher's timestamps on a share of its training examples; so does distilflow:

- the teacher labels with timestamps (params.yaml ``label.timestamps: true``): each label's
  ``token_ids`` then hold its segments, ``<|t0|> text <|t1|><|t1|> text <|t2|>``;
- ``student.timestamp_share`` (and ``experts.timestamp_share``) of the clips, chosen by content
  hash (the same clips on every run and every epoch), train behind the prompt without
  ``<|notimestamps|>`` on a timestamped target: the teacher's label as it is, or, where the clip
  learns the human reference, the reference between the label's first and last timestamp (a
  clip of a few seconds is one segment);
- every other clip trains behind ``<|notimestamps|>`` on its text alone: timestamp tokens are
  stripped from the label.

A clip whose label has no timestamp tokens trains without them. Pure functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_SALT = b"distilflow-timestamps:"  # independent of the dev split's hash buckets
_BUCKETS = 2**32


def has_timestamps(clip_hash: str, share: float) -> bool:
    """Whether the clip trains with timestamps: about ``share`` of clips, by content hash. Pure."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(_SALT + clip_hash.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") < share * _BUCKETS


def text_tokens(token_ids: Sequence[int], timestamp_begin: int) -> list[int]:
    """``token_ids`` without timestamp tokens (ids at or above ``timestamp_begin``). Pure."""
    return [int(t) for t in token_ids if int(t) < timestamp_begin]


def timestamped_target(
    label_ids: Sequence[int], timestamp_begin: int, text_ids: Sequence[int] | None = None
) -> list[int] | None:
    """The timestamped target of a clip, or None when its label has no timestamps. Pure.

    ``text_ids`` None: the label itself (its segments). Given (a human reference's tokens):
    those tokens between the label's first and last timestamp, one segment.
    """
    stamps = [int(t) for t in label_ids if int(t) >= timestamp_begin]
    if len(stamps) < 2:
        return None
    if text_ids is None:
        return [int(t) for t in label_ids]
    return [stamps[0], *(int(t) for t in text_ids), stamps[-1]]
