"""Student distillation flow (Distil-Whisper): shallow-decoder student learns from the teacher.

python -m flows.student [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distilflow.config import load_params
from distilflow.student.report import StudentReport
from tasks.student import distil_student


def report_markdown(report: StudentReport) -> str:
    t, s = report.teacher, report.student
    lines = ["| language | teacher WER | student WER |", "| --- | --- | --- |"]
    for lang in sorted(t.dev_wer):
        lines.append(
            f"| {lang} | {t.dev_wer[lang]:.3f} | {s.dev_wer.get(lang, float('nan')):.3f} |"
        )
    head = (
        f"Student: {s.parameters:,} parameters (teacher {t.parameters:,}), best step {s.best_step}"
    )
    return "\n".join([head, "", *lines])


@flow(name="student", log_prints=True)
def student_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    params = load_params(params_path)
    report = distil_student(params, params_path)
    create_markdown_artifact(report_markdown(report), key="student-report")
    return report.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    report = student_flow(parser.parse_args().params)
    print(json.dumps({"steps": report["steps"], "dev_wer": report["student"]["dev_wer"]}))


if __name__ == "__main__":
    main()
