"""Evaluation flow: teacher and student (and more) on the dev split and out-of-domain sets.

python -m flows.evaluate [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distilflow.config import load_params
from tasks.evaluate import (
    evaluate_model_on_set,
    load_eval_sets,
    model_peak_memory,
    models_of,
    write_outputs,
)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Every (model, set) pair, one at a time (timings stay honest), then memory and the report."""
    params = load_params(params_path)
    ev = params.evaluate
    sets = load_eval_sets(params)
    models = models_of(params)
    results = [
        evaluate_model_on_set(m, s, ev.max_new_tokens, ev.device) for m in models for s in sets
    ]
    # Peak memory is per process (one fresh process per model): these may run side by side.
    futures = {
        m.name: model_peak_memory.submit(m, sets, ev.max_new_tokens, ev.device) for m in models
    }
    memory = {name: future.result() for name, future in futures.items()}
    metrics, markdown = write_outputs(params, models, sets, results, memory)
    create_markdown_artifact(markdown, key="evaluation-report")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    metrics = evaluate_flow(parser.parse_args().params)
    print(json.dumps(metrics["models"], indent=2))


if __name__ == "__main__":
    main()
