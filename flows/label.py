"""Pseudo-labelling flow: the teacher labels every ingested clip the cache does not hold yet.

    python -m flows.label [--params params.yaml]

Shards are mapped over the flow's task runner: threads by default, a Dask or Ray cluster with
``label_flow.with_options(task_runner=...)``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from distilflow.config import load_params
from tasks._env import cache_dir_of
from tasks.label import collect_labels, label_shard, plan_shards


@flow(name="pseudo-label", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def label_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Label new clips, then write the per-language label files."""
    params = load_params(params_path)
    cfg, cache_dir = params.label, cache_dir_of(params.paths.cache_dir)
    planned = plan_shards(cfg, params.ingest.out_dir, cache_dir)
    done = label_shard.map(cfg, planned, cache_dir, list(range(len(planned))))
    labelled = sum(done.result())
    report = collect_labels(cfg, params.ingest.out_dir, cache_dir)
    report["labelled_this_run"] = labelled
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    report = label_flow(parser.parse_args().params)
    print(json.dumps({k: report[k] for k in ("clips", "labelled", "labelled_this_run")}))


if __name__ == "__main__":
    main()
