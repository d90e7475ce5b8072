"""What a recorded WER was measured on, so that two versions are compared on the same thing.

A registered version records its dev WER per language and, beside it, that figure's *basis*:
one fingerprint per language of the clips scored (content hash and human reference) and of the
decoding (token budget and repetition guard). The promotion gate compares a challenger with the
champion's recorded figure only where the two bases match; where they differ (new clips fell
into the dev split, a reference was corrected, decoding changed) or the champion has none (a
version registered before bases were recorded), the champion is scored again on the
challenger's clips. Without this, every retrain on new data would judge the challenger on
today's clips against the champion's score on yesterday's.

Everything here is pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from distilflow.decoding.loop_guard import LoopGuard
from distilflow.lineage import combine_hashes


def decoding_key(max_new_tokens: int, guard: LoopGuard) -> str:
    """The decoding options a WER depends on, as text (greedy, batch 1, language forced)."""
    return (
        f"greedy|max_new_tokens={max_new_tokens}"
        f"|loop={guard.min_repeats},{guard.min_tokens},{guard.max_unit}"
    )


def clip_key(clip_hash: str, reference: str) -> str:
    """One scored clip: its audio's content hash and the reference it was scored against."""
    return hashlib.sha256(f"{clip_hash}\0{reference}".encode()).hexdigest()


def basis(clips: Iterable[tuple[str, str]], decoding: str) -> str:
    """The fingerprint of one language's WER: ``(clip hash, reference)`` pairs, any order."""
    return combine_hashes([*(clip_key(h, r) for h, r in clips), f"decoding:{decoding}"])


def bases_of(
    rows: Iterable[Mapping[str, Any]], model: str, eval_set: str, decoding: str
) -> dict[str, str]:
    """Per-language basis of ``model`` on ``eval_set`` from the evaluation's transcript rows
    (``transcripts.jsonl``: model, set, id, language, reference; a dev clip's id is its hash)."""
    clips: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if row["model"] == model and row["set"] == eval_set:
            clips.setdefault(str(row["language"]), []).append(
                (str(row["id"]), str(row["reference"]))
            )
    return {lang: basis(pairs, decoding) for lang, pairs in sorted(clips.items())}


def unmatched_languages(
    champion: Mapping[str, str], challenger: Mapping[str, str], scored: Iterable[str]
) -> list[str]:
    """Languages of ``scored`` (the champion's recorded figures) whose basis is not the
    challenger's: the champion must be scored again there. A language the challenger has no
    basis for cannot be checked and is left out (the gate then uses the recorded figure)."""
    checkable = set(scored) & set(challenger)
    return sorted(lang for lang in checkable if champion.get(lang) != challenger[lang])
