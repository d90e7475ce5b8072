"""The parent flow: reproduce the pipeline (DVC decides what is stale), then publish the report.

python -m flows.retrain [--project .] [--languages es fr]

Without languages it is a full run (``dvc repro``: what a schedule runs). With languages it
retrains those languages' experts on the new data, re-evaluates and passes the release through
the registry's promotion gate (what the inbox watcher triggers). Two retrains never run at once:
each holds the one slot of a Prefect global concurrency limit.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency

from distilflow.atomic import atomic_write_jsonl
from distilflow.config import load_params
from tasks.retrain import (
    ensure_concurrency_limit,
    plan_stages,
    read_if_exists,
    reproduce,
    summary_markdown,
)


def runs_log(project: Path, data_dir: str) -> Path:
    return project / data_dir / "retrain" / "runs.jsonl"


def append_run(path: Path, record: dict[str, Any]) -> None:
    """Append one run record (the file is rewritten atomically, so a kill never half-writes)."""
    old = (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if (path.exists())
        else []
    )
    atomic_write_jsonl(path, [*old, record])


def run_name() -> str:
    from prefect.runtime import flow_run

    languages = flow_run.parameters.get("languages")
    return "retrain-" + ("-".join(languages) if languages else "full")


@flow(name="retrain", log_prints=True, flow_run_name=run_name)
def retrain_flow(project: str = ".", languages: list[str] | None = None) -> dict[str, Any]:
    """Reproduce what is stale for ``languages`` (None: everything), then report."""
    root = Path(project).resolve()
    params = load_params(root / "params.yaml")
    plan = plan_stages(params, languages)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    ensure_concurrency_limit(params.retrain.concurrency_limit)
    with concurrency(
        params.retrain.concurrency_limit, timeout_seconds=params.retrain.lock_timeout_s, strict=True
    ):
        ran = reproduce(plan, root)
    decision_path = root / params.register.out_dir / "decision.json"
    record: dict[str, Any] = {
        "started": started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "languages": plan.languages,
        "targets": plan.targets,
        "ran": ran,
        "skipped_languages": plan.skipped_languages,
        "decision": json.loads(decision_path.read_text()) if decision_path.exists() else None,
    }
    append_run(runs_log(root, params.paths.data_dir), record)
    report = read_if_exists(root / params.evaluate.out_dir / "report.md")
    create_markdown_artifact(summary_markdown(record, report), key="retrain-report")
    print(f"retrain: ran {ran or 'nothing'}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".")
    parser.add_argument("--languages", nargs="*", default=None, help="omit for a full run")
    args = parser.parse_args()
    record = retrain_flow(args.project, args.languages)
    print(json.dumps({k: record[k] for k in ("languages", "ran")}))


if __name__ == "__main__":
    main()
