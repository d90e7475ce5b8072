"""Registry flow: register the student in MLflow, promote it to champion if it passes the gate.

Verdicts: promoted, rejected, insufficient_evidence (distilflow/register/gate.py).

python -m flows.register [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distilflow.config import load_params
from tasks.register import register_student


def decision_markdown(record: dict[str, Any]) -> str:
    decision = record["decision"]
    head = (
        f"{record['model_name']} version {record['version']}: **{decision['verdict']}** "
        f"(aliases: {', '.join(record['aliases'])})"
    )
    lines = [head, ""]
    if decision["verdict"] == "insufficient_evidence":
        lines += [
            "Registered, not made champion: the dev clips of "
            f"{', '.join(decision.get('unresolved', []))} cannot tell whether the WER regresses "
            "by more than the tolerance (more dev clips would).",
            "",
        ]
    return "\n".join([*lines, *[f"- {r}" for r in decision["reasons"]]])


@flow(name="register", log_prints=True)
def register_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    params = load_params(params_path)
    record = register_student(params)
    create_markdown_artifact(decision_markdown(record), key="registry-decision")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    record = register_flow(parser.parse_args().params)
    keys = ("model_name", "version", "aliases")
    print(json.dumps({k: record[k] for k in keys} | {"verdict": record["decision"]["verdict"]}))


if __name__ == "__main__":
    main()
