"""Local stand-ins for the team stack, shared by the tests that start real servers: a throwaway
PostgreSQL database on 127.0.0.1:5432, an S3-protocol server (moto) on 127.0.0.1, server
processes on free local ports, a real `prefect server` with a process worker. Nothing here
sends traffic anywhere but 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
# Dummy credentials for the in-memory moto server; handed to subprocesses through their
# environment only, the way real credentials reach DVC, boto3 and MLflow.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment (``mlflow``, ``dvc``, ...)."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


@contextmanager
def postgres_database(prefix: str = "distilflow_test") -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its name. Skips the test when no
    PostgreSQL answers on 127.0.0.1:5432."""
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )


@contextmanager
def moto_s3(buckets: Sequence[str]) -> Iterator[str]:
    """An in-memory S3-protocol server (moto) on 127.0.0.1 with ``buckets``; yields its URL."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = s3_client(endpoint)
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        moto.stop()


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def wait_http_ok(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float, what: str
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` died, fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode}):\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{what} not healthy after {timeout} s:\n{tail(log)}")


def start_process(
    cmd: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, stdout and stderr into ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of ``proc`` (children included), SIGKILL it after 5 s."""
    try:
        os.killpg(proc.pid, 15)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


@contextmanager
def serving(
    cmd: Sequence[str], env: Mapping[str, str], log: Path, health: str, what: str, timeout: float
) -> Iterator[None]:
    """A server process for the block: started, healthy at ``health``, then stopped."""
    proc = start_process(cmd, env, log)
    try:
        wait_http_ok(health, proc, log, timeout=timeout, what=what)
        yield
    finally:
        stop_process(proc)


# --- Prefect ---------------------------------------------------------------------------------

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
