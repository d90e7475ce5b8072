"""A real `prefect server` process on 127.0.0.1 and a process worker, for deployment tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PREFECT = str(Path(sys.executable).parent / "prefect")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **extra,
    }


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} not healthy after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def prefect_server(home: Path, log: Path, **env: str) -> Iterator[str]:
    """Start ``prefect server start`` on a free port; yields its API URL; stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env(home, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(url, proc)
            yield url
        finally:
            stop(proc)


@contextmanager
def process_worker(
    pool: str, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``prefect worker start --pool <pool>``, polling every 2 s; stopped after."""
    worker_env = {
        **env,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
            cwd=cwd,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            stop(proc)


def wait_for_run(
    find: Callable[[], Any | None],
    timeout: float,
    what: str,
    logs: list[Path] = (),  # type: ignore[assignment]
) -> Any:
    """Poll ``find()`` (a flow run or None) until the run is terminal; returns it."""
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        run = find()
        if run is not None and run.state is not None and run.state.type.value in TERMINAL:
            return run
        time.sleep(2)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    raise TimeoutError(f"{what}: not finished after {timeout} s (last: {run})\n{tails}")
