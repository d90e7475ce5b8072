"""Shared fixtures. Everything here is real: files on disk, a real Prefect server, real DVC."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tasks._env import apply_defaults

apply_defaults()

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTILFLOW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ASTERISK = SHARED_DATA / "asterisk-dev"


def tone(seconds: float, sr: int = 16_000, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """A float32 sine tone."""
    t = np.arange(int(seconds * sr), dtype=np.float32) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def audio_bytes(
    samples: np.ndarray, sr: int = 16_000, fmt: str = "WAV", subtype: str = "PCM_16"
) -> bytes:
    """Encode samples (mono or (n, channels)) to bytes."""
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def write_audiofolder(root: Path, entries: list[dict[str, object]]) -> Path:
    """Write an audiofolder: each entry has file_name and optional bytes/text/language."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in entries:
        data = e.get("bytes")
        if isinstance(data, bytes):
            path = root / str(e["file_name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        lines.append({k: v for k, v in e.items() if k != "bytes"})
    with (root / "metadata.jsonl").open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    return root


_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_MLFLOW_ENV_AT_START = {var: os.environ.get(var) for var in _MLFLOW_ENV}  # the user's, if any


@pytest.fixture(autouse=True)
def _mlflow_env_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI (and the registry's): what a test
    or a module fixture set that way must not reach the next test as if a user had configured
    it. Each test starts from the environment the session started with."""
    for var, value in _MLFLOW_ENV_AT_START.items():
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real temporary Prefect server for the whole session (about 9 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def asterisk() -> Path:
    if not (ASTERISK / "metadata.jsonl").exists():
        pytest.skip(f"asterisk-dev corpus not found at {ASTERISK}")
    return ASTERISK


def accept_random_labels(raw: dict[str, Any], tmp_path: Path) -> None:
    """params.yaml overrides for a tiny random teacher: keep all its labels, track in tmp_path."""
    raw["filter"].update(
        max_error={"default": 1e9}, drop_uppercase=False, max_compression_ratio=1e9
    )
    raw["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"


class Crash(Exception):
    """Raised by ``CrashAfter``: a training run killed in the middle."""


class CrashAfter:
    """A tracker that kills the run once it logs a step after ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step > self.step:
            raise Crash
