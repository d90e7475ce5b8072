"""A real `prefect server` process on 127.0.0.1 and a process worker, for deployment tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.stack import free_port, serving, start_process, stop_process, tail, venv_bin

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def prefect_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without its Prefect settings, plus a Prefect home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        **extra,
    }


@contextmanager
def prefect_server(home: Path, log: Path, **env: str) -> Iterator[str]:
    """``prefect server start`` on a free local port; yields its API URL; stopped after.
    ``env`` adds settings, e.g. ``PREFECT_API_DATABASE_CONNECTION_URL`` for PostgreSQL."""
    port = free_port()
    cmd = [venv_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with serving(cmd, prefect_env(home, **env), log, f"{api}/health", "prefect server", 90):
        yield api


@contextmanager
def process_worker(pool: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """``prefect worker start --pool <pool>`` polling every 2 s, until the block ends."""
    cmd = [venv_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process"]
    quick = {"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    proc = start_process(cmd, {**env, **quick}, log, cwd=cwd)
    try:
        yield
    finally:
        stop_process(proc)


def wait_for_run(
    find: Callable[[], Any | None], timeout: float, what: str, logs: Sequence[Path] = ()
) -> Any:
    """Poll ``find()`` (a flow run or None) until the run is in a terminal state; return it."""
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        run = find()
        if run is not None and run.state is not None and run.state.type.value in TERMINAL:
            return run
        time.sleep(2)
    tails = "\n".join(f"--- {p}\n{tail(p)}" for p in logs)
    raise TimeoutError(f"{what}: not finished after {timeout} s (last: {run})\n{tails}")
