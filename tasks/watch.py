"""Prefect tasks of the inbox watcher: list and hash the inbox, trigger the retrain deployment."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from distilflow.config import SourceConfig
from distilflow.ingest.inbox import InboxScan, forget_runs, scan

# terminal states after which a run's clips are handed on again
RETRY_STATES = frozenset({"FAILED", "CRASHED", "CANCELLED"})


@task(name="scan-inbox", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def scan_inbox(source: SourceConfig, seen: list[str]) -> InboxScan:
    """New clips of the inbox by content hash. Retried: S3 listing and reads are network I/O."""
    return scan(source, seen)


@task(name="failed-retrain-runs", retries=2, retry_delay_seconds=[2, 10])
def failed_runs(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The state without the clips whose retrain run failed, crashed or was cancelled."""
    runs = {r["run"] for r in state.values() if r.get("run") not in (None, "inline")}
    failed: set[str] = set()
    with get_client(sync_client=True) as client:
        for run in runs:
            try:
                flow_run = client.read_flow_run(UUID(run))
            except (ObjectNotFound, ValueError):
                continue  # another server's run, or deleted: keep the clips as handed on
            if flow_run.state is not None and flow_run.state.type.value in RETRY_STATES:
                failed.add(run)
    if failed:
        print(f"watch: {len(failed)} earlier retrain run(s) did not complete: handing on again")
    return forget_runs(state, failed)


@task(name="trigger-retrain", retries=3, retry_delay_seconds=[2, 10, 30])
def trigger_retrain(
    deployment: str, project: str, languages: list[str] | None, hashes: list[str]
) -> str:
    """Start a run of the retrain deployment and return its id without waiting for it.

    The idempotency key is the set of new content: a watcher killed after this call and run again
    does not start a second run for the same clips.
    """
    key = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:32]
    run = run_deployment(
        deployment,
        parameters={"project": project, "languages": languages},
        timeout=0,
        idempotency_key=f"inbox-{key}",
        as_subflow=False,
    )
    assert isinstance(run, FlowRun), "run_deployment ran asynchronously in a synchronous task"
    print(f"watch: started {deployment} run {run.name} ({run.id}) for {languages or 'all'}")
    return str(run.id)
