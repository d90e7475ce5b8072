"""The registry against a real team stack: ``mlflow server`` (PostgreSQL backend store, S3
artifacts on a moto S3-protocol server through ``--artifacts-destination``), and a consumer that
only knows the http tracking URI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from distilflow.config import RegisterConfig, TrackingConfig
from distilflow.register.download import load_registered
from distilflow.register.registry import Candidate, register_model_dir
from distilflow.testing import save_tiny_whisper
from tests.stack import (
    PG,
    S3_ENV,
    free_port,
    moto_s3,
    postgres_database,
    s3_client,
    serving,
    venv_bin,
)

pytestmark = pytest.mark.postgres

BUCKET = "mlflow-artifacts"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped afterwards; yields its SQLAlchemy URI."""
    with postgres_database() as name:
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A local S3-protocol server (moto) with the artifact bucket; yields its endpoint URL."""
    with moto_s3([BUCKET]) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def server(database: str, s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free local port; killed (whole process group) afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = os.environ | S3_ENV | {"MLFLOW_S3_ENDPOINT_URL": s3, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [venv_bin("mlflow"), "server", "--backend-store-uri", database]
    cmd += ["--artifacts-destination", f"s3://{BUCKET}/distilflow", "--serve-artifacts"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with serving(cmd, env, log, f"{url}/health", "mlflow server", 60):
        yield url


def test_register_promote_and_load_through_server(
    server: str, s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)  # the client knows the http URI only
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    tracking = TrackingConfig(uri=server, experiment="server-test")
    cfg = RegisterConfig(model_name="team-student", tolerance=0.02, out_dir=str(tmp_path))
    lineage = {"git_commit": "c", "params_hash": "p", "input_hash": "i", "teacher_id": "t"}

    def candidate(directory: Path, errors: int) -> Candidate:
        """Two dev clips of 10 words, ``errors`` errors on each (per-clip errors in S3)."""
        clips = {"fr": {"k1": (errors, 10), "k2": (errors, 10)}}
        wer = {"fr": errors / 10}
        return Candidate(directory, wer, lineage, wer_basis={"fr": "B"}, clip_errors=clips)

    first = register_model_dir(tracking, cfg, candidate(save_tiny_whisper(tmp_path / "a", 0), 5))
    second = register_model_dir(tracking, cfg, candidate(save_tiny_whisper(tmp_path / "b", 1), 4))
    assert (first.decision.promote, second.decision.promote) == (True, True)
    assert second.decision.intervals["fr"]["high"] == pytest.approx(-0.1)  # the champion's clips
    assert second.decision.champion_version == first.version == "1"
    client = mlflow.MlflowClient(tracking_uri=server)
    assert client.get_model_version_by_alias("team-student", "production").version == "2"
    assert client.get_model_version("team-student", "2").tags["decision"] == "promoted"

    audio = (0.1 * np.sin(np.arange(16_000) / 8.0)).astype(np.float32)
    model = load_registered("models:/team-student@champion", tmp_path / "cache", tracking=server)
    assert isinstance(model.transcribe(audio, language="fr", max_new_tokens=8), str)
    weights = (model.directory / "model.safetensors").read_bytes()
    assert weights == (tmp_path / "b" / "model.safetensors").read_bytes()

    objects = s3_client(s3).list_objects_v2(Bucket=BUCKET, Prefix="distilflow/")
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith("model.safetensors") for k in keys)  # artifacts live in S3
    assert any(k.endswith("decision.json") for k in keys)
