"""The gate's third verdict, insufficient evidence: paired dev clips, intervals, per-clip records.

Pure tests of the gate and of the per-clip records, then the registry (a real SQLite MLflow
store) recording per-clip errors, reading the champion's back and re-scoring a champion that has
none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distilflow.config import RegisterConfig, TrackingConfig
from distilflow.register.clip_errors import (
    Rescored,
    as_rescored,
    clip_errors_of,
    from_record,
    paired_clips,
    to_record,
)
from distilflow.register.gate import INSUFFICIENT, PROMOTED, REJECTED, PairedClips, decide
from distilflow.register.model_card import metrics_table
from distilflow.register.registry import Candidate, register_model_dir
from distilflow.register.wer_basis import clip_key
from distilflow.testing import save_tiny_whisper

TOL = 0.02


def pair(champion: list[int], challenger: list[int], words: list[int]) -> PairedClips:
    return PairedClips(tuple(champion), tuple(challenger), tuple(words))


def wer(errors: list[int], words: list[int]) -> float:
    return sum(errors) / sum(words)


# 40 clips of 10 words: precise enough to resolve a 0.02 tolerance
MANY = [10] * 40
BASE = [2, 3, 1, 2] * 10


def test_no_champion_still_promotes() -> None:
    d = decide({"fr": 0.5}, None, TOL, paired={"fr": pair([1], [1], [2])})
    assert d.promote and d.verdict == PROMOTED and not d.insufficient


def test_clearly_better_on_many_clips_is_promoted() -> None:
    better = [e - 1 for e in BASE]
    d = decide(
        {"fr": wer(better, MANY)},
        {"fr": wer(BASE, MANY)},
        TOL,
        "1",
        {"fr": pair(BASE, better, MANY)},
    )
    assert d.verdict == PROMOTED and d.promote and d.unresolved == []
    assert d.intervals["fr"]["high"] <= TOL and d.intervals["fr"]["clips"] == 40
    assert any(r.startswith("fr: within the tolerance 0.0200") for r in d.reasons)


def test_clearly_worse_on_many_clips_is_rejected() -> None:
    worse = [e + 1 for e in BASE]
    d = decide(
        {"fr": wer(worse, MANY)}, {"fr": wer(BASE, MANY)}, TOL, "1", {"fr": pair(BASE, worse, MANY)}
    )
    assert d.verdict == REJECTED and not d.promote and not d.insufficient
    assert d.intervals["fr"]["low"] > TOL
    assert d.reasons[0].startswith("fr: WER regresses by more than the tolerance 0.0200")
    assert "on 40 dev clips" in d.reasons[0]


def test_few_clips_cannot_resolve_the_tolerance() -> None:
    """Four clips; the challenger better on three and much worse on one: the point figures
    would reject (+0.025 > 0.02) but the interval spans both sides of the tolerance."""
    champ, chal, words = [2, 2, 2, 2], [1, 1, 1, 6], [10, 10, 10, 10]
    champion = {"fr": wer(champ, words), "en": 0.30}
    challenger = {"fr": wer(chal, words), "en": 0.10}
    d = decide(challenger, champion, TOL, "1", {"fr": pair(champ, chal, words)})
    assert d.verdict == INSUFFICIENT and not d.promote and d.insufficient
    assert d.unresolved == ["fr"]
    fr = d.intervals["fr"]
    assert fr["low"] <= TOL < fr["high"] and fr["clips"] == 4
    assert d.reasons[0].startswith("fr: insufficient evidence: WER change +0.0250, 95% interval")
    assert "on 4 dev clips" in d.reasons[0] and "neither ruled in nor out" in d.reasons[0]
    # en had no per-clip errors: judged on its figures, and said so
    assert any("judged on the WER figures alone" in r and r.endswith(": en") for r in d.reasons)
    # JSON-safe, with the verdict spelled out
    record = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert record["verdict"] == "insufficient_evidence" and record["promote"] is False
    assert record["unresolved"] == ["fr"] and record["intervals"]["fr"]["clips"] == 4


def test_one_clip_is_no_interval() -> None:
    d = decide({"fr": 0.1}, {"fr": 0.2}, TOL, "1", {"fr": pair([2], [1], [10])})
    assert d.verdict == INSUFFICIENT and d.unresolved == ["fr"]
    assert d.reasons[0] == (
        "fr: insufficient evidence: 1 dev clip, too few for an interval to resolve the "
        "tolerance 0.0200"
    )


def test_a_rule_that_rejects_wins_over_insufficient_evidence() -> None:
    champ, chal, words = [2, 2, 2, 2], [1, 1, 1, 6], [10, 10, 10, 10]
    paired = {"fr": pair(champ, chal, words)}
    # the mean does not improve: rejected, the unresolved language still said
    d = decide({"fr": 0.25, "en": 0.3}, {"fr": 0.2, "en": 0.3}, TOL, "1", paired)
    assert d.verdict == REJECTED and d.unresolved == ["fr"] and not d.insufficient
    assert d.reasons[0].startswith("macro mean WER does not improve")
    assert d.reasons[1].startswith("fr: insufficient evidence")
    # a language the champion scores and the challenger does not
    d = decide({"fr": 0.25}, {"fr": 0.2, "ru": 0.4}, TOL, "1", paired)
    assert d.verdict == REJECTED


def test_model_card_shows_the_intervals() -> None:
    champ, chal, words = [2, 2, 2, 2], [1, 1, 1, 6], [10, 10, 10, 10]
    d = decide(
        {"fr": 0.25, "en": 0.1}, {"fr": 0.2, "en": 0.3}, TOL, "1", {"fr": pair(champ, chal, words)}
    )
    lines = metrics_table({"fr": 0.25, "en": 0.1}, d)
    assert lines[0] == "| language | dev WER | champion WER | delta | 95% interval (clips) |"
    assert lines[2] == "| en | 0.100 | 0.300 | -0.200 | n/a |"
    assert lines[3].startswith("| fr | 0.250 | 0.200 | +0.050 | [") and lines[3].endswith("(4) |")
    assert lines[-1] == "| **macro mean** | 0.175 | | | |"


def test_clip_records_round_trip_and_pair() -> None:
    rows = [
        {
            "model": "student",
            "set": "dev",
            "id": "h1",
            "language": "fr",
            "reference": "un deux trois",
            "hypothesis": "un deux",
        },
        {
            "model": "experts",
            "set": "dev",
            "id": "h1",
            "language": "fr",
            "reference": "un deux trois",
            "hypothesis": "un deux trois",
        },
        {
            "model": "student",
            "set": "dev",
            "id": "h2",
            "language": "en",
            "reference": "hello there",
            "hypothesis": "hello their",
        },
        {
            "model": "student",
            "set": "dev",
            "id": "h3",
            "language": "en",
            "reference": "...",
            "hypothesis": "noise",
        },  # no reference words: left out
        {
            "model": "student",
            "set": "ood",
            "id": "x",
            "language": "en",
            "reference": "a",
            "hypothesis": "b",
        },
    ]
    clips = clip_errors_of(rows, {"fr": "experts", "en": "student"}, "dev")
    assert clips == {
        "en": {clip_key("h2", "hello there"): (1, 2)},
        "fr": {clip_key("h1", "un deux trois"): (0, 3)},
    }
    assert from_record(json.loads(json.dumps(to_record(clips)))) == clips
    assert from_record({"format": 99}) == {} and from_record(None) == {}
    other = {clip_key("h2", "hello there"): (2, 2)}
    assert paired_clips(clips["en"], other) == PairedClips((2,), (1,), (2,))
    assert paired_clips(clips["en"], {clip_key("h9", "x"): (0, 1)}) is None  # other clips
    assert paired_clips(clips["en"], None) is None
    assert as_rescored({"en": 0.5}) == Rescored({"en": 0.5})


def test_the_registry_pairs_the_champions_recorded_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 records per-clip errors; version 2 on the same clips is judged on the paired
    interval without scoring the champion again; a champion without a per-clip record (an older
    version) is scored again for it, the recorded figure kept in the reasons."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="evidence")
    cfg = RegisterConfig(model_name="evidence", tolerance=TOL, out_dir=str(tmp_path / "reg"))
    model = save_tiny_whisper(tmp_path / "m", seed=0)
    keys = [clip_key(f"h{i}", f"ref {i}") for i in range(4)]
    calls: list[list[str]] = []

    def clips_of(errors: list[int]) -> dict[str, dict[str, tuple[int, int]]]:
        return {"fr": {k: (e, 10) for k, e in zip(keys, errors, strict=True)}}

    def rescore(uri: str, languages: list[str]) -> Rescored:
        calls.append(languages)
        return Rescored({"fr": 0.2}, clips_of([2, 2, 2, 2]))

    def register(errors: list[int], recorded: bool = True) -> dict[str, Any]:
        clips = clips_of(errors) if recorded else {}
        cand = Candidate(
            model, {"fr": sum(errors) / 40}, {}, wer_basis={"fr": "B"}, clip_errors=clips
        )
        return register_model_dir(tracking, cfg, cand, rescore).decision.to_dict()

    assert register([2, 2, 2, 2])["verdict"] == "promoted"
    second = register([0, 0, 0, 7])  # better on three clips, much worse on one
    assert calls == []  # the champion's recorded clips were read back from its run
    assert second["verdict"] == "insufficient_evidence" and second["unresolved"] == ["fr"]
    assert second["intervals"]["fr"]["clips"] == 4 and second["champion_rescored"] == {}
    # the champion is still version 1; a version without per-clip errors is judged as before
    third = register([3, 3, 3, 3], recorded=False)
    assert third["verdict"] == "rejected" and third["champion_version"] == "1"
    assert third["intervals"] == {}
    # a champion without a per-clip record: scored again for it
    fourth = register([0, 0, 0, 0], recorded=False)  # promoted on the figures: no record
    assert fourth["verdict"] == "promoted" and fourth["champion_version"] == "1"
    fifth = register([0, 0, 0, 7])
    assert calls == [["fr"]] and fifth["champion_version"] == "4"
    assert fifth["verdict"] == "insufficient_evidence"
    assert fifth["champion_rescored"] == {"fr": 0.0}
    assert any("scored again for its per-clip errors" in r for r in fifth["reasons"])
