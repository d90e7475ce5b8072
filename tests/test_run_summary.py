"""The summary `distilflow run` ends with, and how it shows the MLflow UI (passwords masked)."""

from __future__ import annotations

from distilflow.evaluate.metrics import PairResult, build_metrics
from distilflow.evaluate.models import ClipResult
from distilflow.evaluate.summary import run_summary
from distilflow.register.tracking import ui_command


def clips(model: str) -> list[ClipResult]:
    wrong = {"teacher": 0, "student": 2, "experts": 1}[model]
    seconds = {"teacher": 2.0, "student": 1.0, "experts": 1.0}[model]
    return [
        ClipResult(f"{lang}{i}", lang, "un deux trois quatre", hyp, 4.0, seconds, 5, "end")
        for lang in ("es", "fr")
        for i, hyp in enumerate(
            ["un deux trois quatre", "un deux " + ("x y" if wrong == 2 else "x quatre")]
            if wrong
            else ["un deux trois quatre"] * 2
        )
    ]


def metrics() -> dict[str, object]:
    models = ("teacher", "student", "experts")
    results = [PairResult(m, "dev", m, m, 10, clips(m)) for m in models]
    return build_metrics(results, {})


DECISION = {
    "model_name": "distilflow-student",
    "version": "3",
    "aliases": ["champion"],
    "decision": {"verdict": "promoted", "reasons": ["no champion yet"]},
}


def test_the_summary_states_the_model_against_the_teacher_and_the_decision() -> None:
    text = run_summary(
        ["student", "evaluate", "register"],
        metrics(),
        DECISION,
        "data/evaluate/report.md",
        ui_command("sqlite:///mlflow.db"),
    )
    lines = text.splitlines()
    assert lines[0] == "distilflow: ran student, evaluate, register."
    assert "On the dev split (4 clips; es, fr)" in text
    teacher = next(line for line in lines if line.strip().startswith("teacher"))
    student = next(line for line in lines if line.strip().startswith("student "))
    experts = next(line for line in lines if "student + experts" in line)
    assert "0.0 %" in teacher and "1.00x" in teacher
    assert "25.0 %" in student and "2.00x" in student and "(+25.0 points)" in student
    assert "12.5 %" in experts and "(+12.5 points)" in experts
    assert "Registry: distilflow-student version 3 promoted (@champion), because:" in text
    assert "  - no champion yet" in text
    assert "Report: data/evaluate/report.md" in text
    assert lines[-1] == (
        "MLflow UI: mlflow ui --backend-store-uri sqlite:///mlflow.db  (then http://127.0.0.1:5000)"
    )


def test_the_teacher_comes_first_whatever_order_the_metrics_hold() -> None:
    results = [PairResult(m, "dev", m, m, 10, clips(m)) for m in ("experts", "student", "teacher")]
    text = run_summary(["evaluate"], build_metrics(results, {}), None, None, "x")
    rows = [line.split()[0] for line in text.splitlines() if line.startswith("  ") and "%" in line]
    assert rows == ["teacher", "student", "student"]  # the last: "student + experts"


def test_an_up_to_date_run_says_so() -> None:
    text = run_summary([], None, DECISION, None, "open http://mlflow:5000")
    assert text.startswith("distilflow: ran nothing (every stage up to date).")
    assert "No evaluation figures yet." in text
    assert "Registry unchanged: distilflow-student version 3 (@champion)." in text
    assert "Report:" not in text
    assert run_summary([], None, None, None, "x").count("nothing registered yet") == 1


def test_the_ui_command_never_shows_a_password() -> None:
    team = ui_command("postgresql://mlflow:s3cret@127.0.0.1:5432/mlflow")
    assert "s3cret" not in team and "mlflow:***@127.0.0.1:5432" in team
    assert ui_command("https://user:tok@mlflow.example.com") == (
        "open https://user:***@mlflow.example.com"
    )
    assert ui_command("http://mlflow:5000") == "open http://mlflow:5000"
