"""Per-language experts flow (DistilWhisper): one language's experts on top of the student.

python -m flows.experts [--language fr] [--params params.yaml]
Without --language, every language of ``experts.languages`` in turn.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distilflow.config import ConfigError, load_params
from distilflow.experts.report import ExpertsReport, ExpertsSkipped
from tasks.experts import train_experts


def report_markdown(reports: list[ExpertsReport | ExpertsSkipped]) -> str:
    lines = [
        "| language | method | student WER | with experts | serves | trained parameters |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        if isinstance(r, ExpertsSkipped):
            lines.append(f"| {r.language} | {r.method} | skipped: {r.skipped} | | student | |")
            continue
        lines.append(
            f"| {r.language} | {r.method} | {r.student_dev_wer:.3f} | "
            f"{r.dev_wer:.3f} | {r.serves} (step {r.best_step}) | {r.trained_parameters:,} |"
        )
    return "\n".join(lines)


@flow(name="experts", log_prints=True, flow_run_name="experts-{languages}")
def experts_flow(
    params_path: str = "params.yaml", languages: list[str] | None = None
) -> list[dict[str, Any]]:
    params = load_params(params_path)
    wanted = languages or params.experts.languages
    unknown = [lang for lang in wanted if lang not in params.experts.languages]
    if unknown:
        raise ConfigError(
            f"{params_path}: experts.languages does not list {', '.join(unknown)}; add them there"
        )
    reports = [train_experts(params, lang) for lang in wanted]
    create_markdown_artifact(report_markdown(reports), key="experts-report")
    return [r.to_dict() for r in reports]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--language", action="append", help="a language of experts.languages")
    args = parser.parse_args()
    reports = experts_flow(args.params, args.language)
    print(json.dumps({r["language"]: r.get("dev_wer", r.get("skipped")) for r in reports}))


if __name__ == "__main__":
    main()
