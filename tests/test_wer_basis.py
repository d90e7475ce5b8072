"""What a recorded WER was measured on (pure), and the gate's use of it on a real registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from distilflow.config import RegisterConfig, TrackingConfig
from distilflow.decoding.loop_guard import LoopGuard
from distilflow.register.gate import decide, with_rescored
from distilflow.register.registry import Candidate, register_model_dir
from distilflow.register.wer_basis import bases_of, basis, decoding_key, unmatched_languages
from distilflow.testing import save_tiny_whisper

DECODING = decoding_key(128, LoopGuard())


def test_basis_is_the_clips_references_and_decoding_in_any_order() -> None:
    clips = [("h1", "bonjour"), ("h2", "merci")]
    assert basis(clips, DECODING) == basis(clips[::-1], DECODING)
    assert basis(clips, DECODING) != basis([*clips, ("h3", "oui")], DECODING)  # a new dev clip
    assert basis(clips, DECODING) != basis([("h1", "Bonjour"), ("h2", "merci")], DECODING)
    assert basis(clips, DECODING) != basis(clips, decoding_key(64, LoopGuard()))
    assert basis(clips, DECODING) != basis(clips, decoding_key(128, LoopGuard(0)))
    # the pair is hashed as a pair: moving text between id and reference is another basis
    assert basis([("ab", "c")], DECODING) != basis([("a", "bc")], DECODING)


def test_bases_of_reads_one_model_on_one_set_per_language() -> None:
    rows = [
        {"model": "student", "set": "dev", "id": "h1", "language": "fr", "reference": "a"},
        {"model": "student", "set": "dev", "id": "h2", "language": "en", "reference": "b"},
        {"model": "teacher", "set": "dev", "id": "h9", "language": "fr", "reference": "z"},
        {"model": "student", "set": "ood", "id": "x.wav", "language": "fr", "reference": "y"},
    ]
    assert bases_of(rows, "student", "dev", DECODING) == {
        "en": basis([("h2", "b")], DECODING),
        "fr": basis([("h1", "a")], DECODING),
    }


def test_unmatched_languages() -> None:
    champion = {"en": "A", "fr": "B"}
    challenger = {"en": "A", "fr": "C", "ru": "D"}
    assert unmatched_languages(champion, challenger, ["en", "fr", "ru"]) == ["fr", "ru"]
    assert unmatched_languages({}, challenger, ["en"]) == ["en"]  # a version without bases
    assert unmatched_languages(champion, {}, ["en", "fr"]) == []  # nothing to check against


def test_with_rescored_keeps_the_recorded_figure_and_says_why() -> None:
    decision = with_rescored(decide({"fr": 0.40}, {"fr": 0.41}, 0.02, "1"), {"fr": 0.30})
    assert decision.promote and decision.champion_wer == {"fr": 0.41}
    assert decision.champion_rescored == {"fr": 0.30}
    assert decision.reasons[-1] == (
        "fr: champion scored again on the challenger's dev clips: 0.4100 (recorded: 0.3000, "
        "not known to be on the same clips and decoding)"
    )
    assert decision.to_dict()["champion_rescored"] == {"fr": 0.30}


def test_the_gate_scores_the_champion_again_where_the_clips_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SQLite registry; the scorer is the caller's (tests/test_evaluate_stage.py scores
    a release for real): called for the languages whose basis differs, with the champion."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="basis")
    cfg = RegisterConfig(model_name="basis-test", tolerance=0.02, out_dir=str(tmp_path / "reg"))
    model = save_tiny_whisper(tmp_path / "m", seed=0)
    calls: list[tuple[str, list[str]]] = []

    def rescore(uri: str, languages: list[str]) -> dict[str, float]:
        calls.append((uri, languages))
        return {"fr": 0.55}

    def register(wer: dict[str, float], bases: dict[str, str]) -> dict[str, object]:
        cand = Candidate(model, wer, {}, wer_basis=bases)
        return register_model_dir(tracking, cfg, cand, rescore).decision.to_dict()

    first = register({"en": 0.3, "fr": 0.6}, {"en": "A", "fr": "B"})
    assert first["promote"] and calls == []
    # new French dev clips: the champion's 0.6 was on others; scored again it makes 0.55
    second = register({"en": 0.3, "fr": 0.5}, {"en": "A", "fr": "C"})
    assert calls == [("models:/basis-test/1", ["fr"])]
    assert second["champion_wer"] == {"en": 0.3, "fr": 0.55}
    assert second["champion_rescored"] == {"fr": 0.6}
    assert second["deltas"] == pytest.approx({"en": 0.0, "fr": -0.05})
    assert second["promote"]  # against the recorded 0.6 too, but now for the right reason
    # the same clips as the champion (version 2): its recorded figures stand
    calls.clear()
    third = register({"en": 0.3, "fr": 0.56}, {"en": "A", "fr": "C"})
    assert calls == [] and third["champion_rescored"] == {}
    assert not third["promote"] and third["deltas"] == pytest.approx({"en": 0.0, "fr": 0.06})
