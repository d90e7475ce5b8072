"""The training stages' typed reports (student, experts): each reads back equal, and writes the
very bytes the stage wrote when its report was a dict (the dicts below are what the old code
built for the same input)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from distilflow.atomic import atomic_write_json
from distilflow.config import Params, load_params, section_hash
from distilflow.experts.report import (
    ExpertsLineage,
    ExpertsReport,
    ExpertsSkipped,
    read_language_report,
)
from distilflow.experts.select import TRAINED, Serving
from distilflow.student.report import StudentReport
from distilflow.training.loop import TrainState

from .helpers import REPO_ROOT

HISTORY = [{"step": 2, "en": 0.5, "fr": 0.75}, {"step": 4, "en": 0.25, "fr": 0.5}]


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO_ROOT / "params.yaml")


def assert_written_as(path: Path, expected: dict[str, Any], tmp_path: Path) -> None:
    """``path`` holds the bytes ``atomic_write_json`` writes for ``expected``."""
    old = tmp_path / "old.json"
    atomic_write_json(old, expected)
    assert path.read_bytes() == old.read_bytes()


def assert_same_order(got: Any, expected: Any) -> None:
    """Equal, with every dict's keys in the same order (the flows print parts unsorted)."""
    assert got == expected
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        for key, value in expected.items():
            assert_same_order(got[key], value)


def state(best_wer: dict[str, float], best_score: float) -> TrainState:
    return TrainState("fp", 4, best_score, 4, best_wer, {}, [dict(h) for h in HISTORY])


def test_student_report(params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilflow.student import stage

    monkeypatch.setattr(stage, "git_commit", lambda: "abc123")
    cfg = params.student
    from distilflow.training.packing import Window
    from distilflow.training.prepare import RunData

    # three examples: two clips alone and a window packing two more (four clips trained on)
    clips = [SimpleNamespace(language=lang, hash=h) for lang, h in (("fr", "a"), ("en", "b"))]
    window = Window("w", "fr", (("c", 0), ("d", 100)), 4.0, ())
    train = [*clips, SimpleNamespace(language="fr", hash="w")]
    run: Any = SimpleNamespace(
        teacher=SimpleNamespace(fingerprint="teach1", model=torch.nn.Linear(4, 3)),
        student=torch.nn.Linear(3, 2),
        layer_ids=[0, 3],
        data=RunData(
            train,
            clips[:2],
            {},
            {},
            "data1",
            {"reference": 1, "pseudo": 3, "timestamps": 2, "windows": 1},
            [window],
        ),
        computed=7,
    )
    teacher_wer = {"fr": 0.5, "en": 0.25}
    report = stage.student_report(
        cfg, "openai/whisper-tiny", run, state({"fr": 0.5, "en": 0.25}, 0.375), teacher_wer, True
    )
    expected = {
        "teacher": {
            "model": "openai/whisper-tiny",
            "id": "teach1",
            "dev_wer": {"fr": 0.5, "en": 0.25},
            "dev_wer_mean": 0.375,
            "parameters": 15,
        },
        "student": {
            "decoder_layers_from_teacher": [0, 3],
            "audio_context": cfg.audio_context,
            "parameters": 8,
            "best_step": 4,
            "dev_wer": {"fr": 0.5, "en": 0.25},
            "dev_wer_mean": 0.375,
        },
        "train_clips": 4,
        "dev_clips": 2,
        "train_languages": {"en": 1, "fr": 3},
        "steps": 4,
        "resumed": True,
        "encoder_states_computed": 7,
        "history": HISTORY,
        "lineage": {
            "git_commit": "abc123",
            "params_hash": section_hash(cfg),
            "input_hash": "data1",
            "teacher_id": "teach1",
        },
        "train_targets": {"pseudo": 3, "reference": 1, "timestamps": 2, "windows": 1},
    }
    assert_same_order(report.to_dict(), expected)
    path = tmp_path / "student" / "report.json"
    assert report.write(path) and not report.write(path)  # unchanged: not rewritten
    assert_written_as(path, expected, tmp_path)
    back = StudentReport.read(path)
    assert back == report
    assert back.write(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_student_report_on_the_results_page(params: Params, tmp_path: Path) -> None:
    from bench.results_page import run_section

    figures = {"decision": None, "stages": []}
    without = " ".join(run_section(figures, None, None))
    assert "Student: ? steps, best dev checkpoint at step ?." in without
    path = tmp_path / "report.json"
    student_report_of(params).write(path)
    lines = " ".join(run_section(figures, StudentReport.read(path), None))
    assert "Student: 6 steps, best dev checkpoint at step 3." in lines


def student_report_of(params: Params) -> StudentReport:
    from distilflow.lineage import Lineage
    from distilflow.student.report import StudentSummary, TeacherSummary

    return StudentReport(
        TeacherSummary("t", "t0", {"en": 0.2}, 0.2, 20),
        StudentSummary([0], params.student.audio_context, 10, 3, {"en": 0.25}, 0.25),
        train_clips=5,
        dev_clips=1,
        train_languages={"en": 5},
        steps=6,
        resumed=False,
        encoder_states_computed=0,
        history=[],
        lineage=Lineage("c", "p", "i", "t0"),
    )


def expert_run(language: str) -> Any:
    clips = [SimpleNamespace(language=language)] * 3
    return SimpleNamespace(
        language=language,
        student=torch.nn.Linear(3, 2),
        train=clips,
        train_clips=len(clips),
        dev=clips[:1],
        data_hash="data1",
        teacher_fingerprint="teach1",
        base_fingerprint="student1",
    )


def test_experts_report(params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilflow.experts import stage

    monkeypatch.setattr(stage, "git_commit", lambda: "abc123")
    cfg = params.experts
    base_wer = {"fr": 0.75}
    serving = Serving(TRAINED, 0.5, 0.625)
    report = stage.language_report(
        cfg, expert_run("fr"), base_wer, state({"fr": 0.5}, 0.5), False, 6, serving
    )
    expected = {
        "language": "fr",
        "method": cfg.method,
        "form": cfg.form if cfg.method == "experts" else None,
        "gate": cfg.gate if cfg.method == "experts" else None,
        "student_dev_wer": 0.75,
        "dev_wer": 0.5,
        "hard_gate_dev_wer": 0.5,
        "soft_gate_dev_wer": 0.625,
        "improved": True,
        "serves": "trained",
        "best_step": 4,
        "steps": 4,
        "resumed": False,
        "train_clips": 3,
        "dev_clips": 1,
        "inference_parameters": 8,
        "trained_parameters": 6,
        "history": HISTORY,
        "lineage": {
            "git_commit": "abc123",
            "params_hash": section_hash(cfg),
            "input_hash": "data1",
            "teacher_id": "teach1",
            "base_model": "student1",
        },
    }
    assert_same_order(report.to_dict(), expected)
    path = tmp_path / "fr" / "report.json"
    assert report.write(path) and not report.write(path)
    assert_written_as(path, expected, tmp_path)
    assert read_language_report(path) == report
    assert isinstance(report.lineage, ExpertsLineage) and report.lineage.base_model == "student1"


def test_experts_report_without_dev_scores_rewrites_the_same_bytes(
    params: Params, tmp_path: Path
) -> None:
    """A language without a dev score: NaN WERs, written as JSON's NaN and read back as NaN."""
    from distilflow.experts import stage

    run = expert_run("it")
    serving = Serving(TRAINED, math.nan, math.nan)
    report = stage.language_report(params.experts, run, {}, state({}, math.inf), True, 6, serving)
    assert math.isnan(report.dev_wer) and math.isnan(report.student_dev_wer)
    assert not report.improved
    path = tmp_path / "it.json"
    report.write(path)
    assert '"dev_wer": NaN' in path.read_text(encoding="utf-8")
    back = read_language_report(path)
    assert isinstance(back, ExpertsReport) and math.isnan(back.dev_wer)
    back.write(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_skipped_language(params: Params, tmp_path: Path) -> None:
    from distilflow.experts import stage

    report = stage._skipped(tmp_path / "xx", "xx", params.experts, "no training clips")
    expected = {"language": "xx", "method": params.experts.method, "skipped": "no training clips"}
    assert_same_order(report.to_dict(), expected)
    path = tmp_path / "xx" / "report.json"
    assert_written_as(path, expected, tmp_path)
    assert read_language_report(path) == report == ExpertsSkipped.from_dict(expected)
