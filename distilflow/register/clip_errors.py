"""Per-clip errors behind a version's dev WER, so that the gate can pair the clips of two versions.

A per-language dev WER says nothing of how sure it is: on four clips one looping transcript moves
it by tens of points. The promotion gate (:mod:`distilflow.register.gate`) therefore compares
challenger and champion clip by clip, with a paired bootstrap interval, which needs each
version's errors on each clip. A registered version records them as ``clip_errors.json`` on its
registration run::

    {"format": 1, "languages": {"fr": {"<clip key>": [errors, words], ...}, ...}}

with the clip key of :func:`distilflow.register.wer_basis.clip_key` (the audio's content hash
and the reference), errors and reference words as ``distilflow.text.clip_error_counts`` counts
them (characters for languages without spaces). Clips whose reference normalises to nothing are
left out, as the corpus WER leaves them out: the figures sum to the recorded WER. They are
comparable with another version's only where the two WERs share their basis (same clips,
references and decoding: :mod:`distilflow.register.wer_basis`) or the champion was scored again
on the challenger's clips (:mod:`distilflow.register.rescore`).

Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distilflow.register.gate import PairedClips
from distilflow.register.wer_basis import clip_key
from distilflow.text import clip_error_counts

ARTIFACT = "clip_errors.json"
FORMAT = 1

ClipErrors = dict[str, dict[str, tuple[int, int]]]  # language -> clip key -> (errors, words)


@dataclass(frozen=True)
class Rescored:
    """A champion scored again: per-language WER and, when known, its per-clip errors."""

    wer: Mapping[str, float]
    clips: Mapping[str, Mapping[str, tuple[int, int]]] = field(default_factory=dict)


def as_rescored(value: Mapping[str, float] | Rescored) -> Rescored:
    """A re-scorer's answer as :class:`Rescored` (a plain mapping: WERs, no per-clip errors)."""
    return value if isinstance(value, Rescored) else Rescored(dict(value))


def add_clip(out: ClipErrors, language: str, clip_hash: str, reference: str, hyp: str) -> None:
    """Score one clip into ``out`` (a clip without reference words is left out)."""
    errors, words = clip_error_counts(language, reference, hyp)
    if words:
        out.setdefault(language, {})[clip_key(clip_hash, reference)] = (errors, words)


def clip_errors_of(
    rows: Iterable[Mapping[str, Any]], model_of: Mapping[str, str], eval_set: str
) -> ClipErrors:
    """Per-clip errors from the evaluation's transcript rows (``transcripts.jsonl``: model, set,
    id, language, reference, hypothesis; a dev clip's id is its hash): for each language of
    ``model_of``, the rows of the model its figure comes from."""
    out: ClipErrors = {}
    for row in rows:
        lang = str(row["language"])
        if row["set"] == eval_set and model_of.get(lang) == row["model"]:
            add_clip(out, lang, str(row["id"]), str(row["reference"]), str(row["hypothesis"]))
    return dict(sorted(out.items()))


def to_record(errors: Mapping[str, Mapping[str, tuple[int, int]]]) -> dict[str, Any]:
    """The JSON of ``clip_errors.json``."""
    languages = {
        lang: {key: [int(e), int(w)] for key, (e, w) in sorted(clips.items())}
        for lang, clips in sorted(errors.items())
    }
    return {"format": FORMAT, "languages": languages}


def from_record(record: Any) -> ClipErrors:
    """The inverse of :func:`to_record`; {} for anything else (a version without the record,
    another format): the gate then has no per-clip errors for that version."""
    if not isinstance(record, Mapping) or record.get("format") != FORMAT:
        return {}
    out: ClipErrors = {}
    for lang, clips in (record.get("languages") or {}).items():
        if isinstance(clips, Mapping):
            out[str(lang)] = {str(k): (int(v[0]), int(v[1])) for k, v in clips.items()}
    return out


def paired_clips(
    challenger: Mapping[str, tuple[int, int]] | None,
    champion: Mapping[str, tuple[int, int]] | None,
) -> PairedClips | None:
    """Both versions' errors on the same clips, or None unless both scored exactly the same clips
    against the same references (clip keys) with the same word counts."""
    if not challenger or not champion or set(challenger) != set(champion):
        return None
    keys = sorted(challenger)
    if any(challenger[k][1] != champion[k][1] for k in keys):
        return None  # the same references normalise to the same words: anything else is wrong
    return PairedClips(
        champion=tuple(champion[k][0] for k in keys),
        challenger=tuple(challenger[k][0] for k in keys),
        words=tuple(challenger[k][1] for k in keys),
    )
