"""The registry against a real team stack: ``mlflow server`` (PostgreSQL backend store, S3
artifacts on a moto S3-protocol server through ``--artifacts-destination``), and a consumer that
only knows the http tracking URI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from distilflow.config import RegistryConfig, TrackingConfig
from distilflow.registry import Candidate, load_registered, register_model_dir
from distilflow.testing import save_tiny_whisper

pytestmark = pytest.mark.postgres

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
BUCKET = "mlflow-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped afterwards; yields its SQLAlchemy URI."""
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"distilflow_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A local S3-protocol server (moto) with the artifact bucket; yields its endpoint URL."""
    import boto3

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    moto.stop()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url``/health until it answers OK; fail early if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(database: str, s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free local port; killed (whole process group) afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = os.environ | {
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    cmd = [mlflow_bin, "server", "--backend-store-uri", database]
    cmd += ["--artifacts-destination", f"s3://{BUCKET}/distilflow", "--serve-artifacts"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, timeout=60)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_register_promote_and_load_through_server(
    server: str, s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import mlflow

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)  # the client knows the http URI only
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    tracking = TrackingConfig(uri=server, experiment="server-test")
    cfg = RegistryConfig(model_name="team-student", tolerance=0.02, out_dir=str(tmp_path))
    lineage = {"git_commit": "c", "params_hash": "p", "input_hash": "i", "teacher_id": "t"}
    first = register_model_dir(
        tracking, cfg, Candidate(save_tiny_whisper(tmp_path / "a", 0), {"fr": 0.5}, lineage)
    )
    second = register_model_dir(
        tracking, cfg, Candidate(save_tiny_whisper(tmp_path / "b", 1), {"fr": 0.4}, lineage)
    )
    assert (first.decision.promote, second.decision.promote) == (True, True)
    assert second.decision.champion_version == first.version == "1"
    client = mlflow.MlflowClient(tracking_uri=server)
    assert client.get_model_version_by_alias("team-student", "production").version == "2"
    assert client.get_model_version("team-student", "2").tags["decision"] == "promoted"

    audio = (0.1 * np.sin(np.arange(16_000) / 8.0)).astype(np.float32)
    model = load_registered("models:/team-student@champion", tmp_path / "cache", tracking=server)
    assert isinstance(model.transcribe(audio, language="fr", max_new_tokens=8), str)
    weights = (model.directory / "model.safetensors").read_bytes()
    assert weights == (tmp_path / "b" / "model.safetensors").read_bytes()

    objects = boto3.client(
        "s3",
        endpoint_url=s3,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).list_objects_v2(Bucket=BUCKET, Prefix="distilflow/")
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith("model.safetensors") for k in keys)  # artifacts live in S3
    assert any(k.endswith("decision.json") for k in keys)
