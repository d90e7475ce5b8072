"""Pseudo-labelling flow: the teacher labels every ingested clip the cache does not hold yet.

    python -m flows.label [--params params.yaml]

Shards are mapped over the task runner ``runner`` of params.yaml names (threads, a Dask or a Ray
cluster: ``run_label``); in Python, ``label_flow.with_options(task_runner=...)``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow

from distilflow.config import load_params
from distilflow.label.report import LabelReport
from tasks._env import cache_dir_of
from tasks.label import collect_labels, label_shard, plan_shards
from tasks.runners import on_runner, one_worker


@flow(name="label", log_prints=True, task_runner=one_worker())
def label_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Label new clips, then write the per-language label files; the report as a plain dict,
    with ``labelled_this_run`` (clips the teacher labelled in this run, not in the file)."""
    params = load_params(params_path)
    cfg, cache_dir = params.label, cache_dir_of(params.paths.cache_dir)
    planned = plan_shards(cfg, params.ingest.out_dir, cache_dir)
    done = label_shard.map(cfg, planned, cache_dir, list(range(len(planned))))
    labelled = sum(done.result())
    report = collect_labels(cfg, params.ingest.out_dir, cache_dir)
    return report.to_dict() | {"labelled_this_run": labelled}


def run_label(params_path: str = "params.yaml") -> dict[str, Any]:
    """``label_flow`` on the runner of ``params_path``'s ``runner`` section."""
    result: dict[str, Any] = on_runner(label_flow, params_path)(params_path)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    result = run_label(parser.parse_args().params)
    report = LabelReport.from_dict(result)
    this_run = result["labelled_this_run"]
    print(
        json.dumps(
            {"clips": report.clips, "labelled": report.labelled, "labelled_this_run": this_run}
        )
    )


if __name__ == "__main__":
    main()
