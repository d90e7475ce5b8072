"""The promotion gate and the model card: pure functions, no MLflow."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from distilflow.config import ConfigError, load_params
from distilflow.register.gate import decide
from distilflow.register.model_card import CardInfo, metrics_table, render_model_card

from .helpers import read_params, write_params

NAN = float("nan")
CHAMP = {"en": 0.20, "fr": 0.40, "ru": 0.60}


def test_first_version_is_promoted() -> None:
    d = decide({"en": 0.3, "fr": 0.5}, None, 0.02)
    assert d.promote and d.champion_wer is None
    assert d.challenger_mean == pytest.approx(0.4)
    assert "no champion yet" in d.reasons[0]


def test_first_version_without_any_score_is_rejected() -> None:
    d = decide({"en": NAN}, None, 0.02)
    assert not d.promote and "no finite WER" in d.reasons[0]


def test_better_everywhere_is_promoted_with_deltas() -> None:
    d = decide({"en": 0.18, "fr": 0.35, "ru": 0.60}, CHAMP, 0.02, champion_version="3")
    assert d.promote and d.verdict == "promoted"
    assert d.deltas == pytest.approx({"en": -0.02, "fr": -0.05, "ru": 0.0})
    assert d.compared == ["en", "fr", "ru"]
    assert d.champion_mean == pytest.approx(0.4) and d.challenger_mean == pytest.approx(
        0.3767, 1e-3
    )
    assert d.champion_version == "3"
    assert any("macro mean WER improves" in r for r in d.reasons)


def test_one_language_regressing_beyond_tolerance_blocks() -> None:
    d = decide({"en": 0.05, "fr": 0.20, "ru": 0.63}, CHAMP, 0.02)  # mean much better, ru +0.03
    assert not d.promote
    assert d.reasons[0].startswith("ru: WER regresses by +0.0300")
    assert d.deltas["ru"] == pytest.approx(0.03)


def test_regression_within_tolerance_is_allowed() -> None:
    d = decide({"en": 0.10, "fr": 0.40, "ru": 0.615}, CHAMP, 0.02)
    assert d.promote
    assert "no language regresses by more than 0.0200" in d.reasons[0]


def test_mean_must_strictly_improve() -> None:
    d = decide(dict(CHAMP), CHAMP, 0.02)
    assert not d.promote and "does not improve" in d.reasons[0]


def test_language_missing_or_nan_in_challenger_blocks() -> None:
    for chal in ({"en": 0.1, "fr": 0.1}, {"en": 0.1, "fr": 0.1, "ru": NAN}):
        d = decide(chal, CHAMP, 0.02)
        assert not d.promote
        assert any(
            r.startswith("ru: champion WER 0.6000 but the challenger has none") for r in d.reasons
        )
        assert d.deltas["ru"] is None and d.compared == ["en", "fr"]


def test_new_and_unscored_languages_are_explained_not_compared() -> None:
    chal = {"en": 0.1, "fr": 0.3, "ru": 0.5, "it": 0.9, "es": NAN}
    d = decide(chal, CHAMP | {"es": NAN}, 0.02)
    assert d.promote
    assert "it: new language (champion has no WER), not compared" in d.reasons
    assert "es: neither model has a WER (missing/NaN), ignored" in d.reasons
    assert d.challenger_mean == pytest.approx(0.3)  # en, fr, ru only: like for like
    assert d.challenger_wer["es"] is None


def test_champion_without_scores_loses_to_scored_challenger() -> None:
    d = decide({"en": 0.5}, {}, 0.02)
    assert d.promote and "champion has no finite WER" in d.reasons[-1]
    assert not decide({"en": NAN}, {"en": NAN}, 0.02).promote


def test_decision_is_json_safe_and_tolerance_checked() -> None:
    d = decide({"en": NAN, "fr": math.inf, "ru": 0.5}, CHAMP, 0.02)
    text = json.dumps(d.to_dict(), allow_nan=False)
    assert json.loads(text)["verdict"] == "rejected"
    with pytest.raises(ValueError, match="tolerance"):
        decide({}, None, -0.1)


def test_model_card_sections_and_table() -> None:
    d = decide({"en": 0.18, "fr": 0.35, "ru": NAN}, CHAMP, 0.02, champion_version="1")
    card = render_model_card(
        CardInfo(
            "distilflow-student",
            "2",
            "student",
            {"en": 0.18, "fr": 0.35, "ru": NAN},
            {"git_commit": "abc", "teacher_id": "t1"},
            {"train_clips": 94, "train_languages": {"en": 20, "fr": 18}},
            d,
        )
    )
    assert card.startswith("# distilflow-student version 2\n")
    for section in ("## Data", "## Metrics", "## Intended use", "## Limitations", "## Lineage"):
        assert section in card
    assert "| en | 0.180 | 0.200 | -0.020 |" in card
    assert "| ru | n/a | 0.600 | n/a |" in card
    assert "- train languages: en: 20, fr: 18" in card
    assert "- git_commit: `abc`" in card
    assert "**rejected** (tolerance 0.020 absolute WER, against champion version 1)" in card


def test_metrics_table_without_champion() -> None:
    lines = metrics_table({"fr": 0.5, "en": 0.25}, None)
    assert lines[2:] == ["| en | 0.250 |", "| fr | 0.500 |", "| **macro mean** | 0.375 |"]


def test_registry_config_is_strict(tmp_path: Path) -> None:
    raw = read_params()
    assert load_params().register.model_name == "distilflow-student"
    for change, message in (
        ({"tolerance": -0.1}, "register.tolerance: must be >= 0"),
        ({"tolerance": "0.02"}, "register.tolerance: expected float"),
        ({"stage": "Production"}, "unknown key register.stage"),
    ):
        bad = copy.deepcopy(raw)
        bad["register"].update(change)
        with pytest.raises(ConfigError, match=message):
            load_params(write_params(tmp_path / "params.yaml", bad))


def test_a_uri_mlflow_exported_itself_is_not_taken_for_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; the next run's params still win."""
    from distilflow.config import TrackingConfig
    from distilflow.register.tracking import tracking_uri, use_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a = TrackingConfig(uri=f"sqlite:///{tmp_path / 'a.db'}", experiment="x")
    b = TrackingConfig(uri=f"sqlite:///{tmp_path / 'b.db'}", experiment="x")
    use_tracking(a)
    assert tracking_uri(b) == b.uri  # not a's, which mlflow left in the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")  # the user's team server
    assert tracking_uri(b) == "http://team:5000"
