"""Shared fixtures. Everything here is real: files on disk, a real Prefect server, real DVC.
Plain helpers (audio, params, projects) are in ``helpers.py``, servers in ``stack.py``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks._env import apply_defaults

from .helpers import ASTERISK, copy_project, init_repos, make_project, project_env, student_params

apply_defaults()

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
    """A real temporary Prefect server for the whole session (about 9 s to start). Every test
    that runs a flow or a task outside ``.fn`` asks for it: without it Prefect starts a server
    of its own (see ``pytest_sessionfinish``)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Shut down the temporary server Prefect starts for a flow run outside ``prefect_harness``
    (a test that forgot it), as the harness shuts its own: its log and event workers drained,
    then the server stopped, while pytest's output streams are still open. Left to Prefect's
    ``atexit`` hooks, this logs after pytest closed them: "--- Logging error ---",
    ``ValueError: I/O operation on closed file`` after the summary."""
    if "prefect.server.api.server" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the default (port-less) one: what a flow run starts
    if server.server_process is None:
        server.stop()  # forgets the instance this call made
        return
    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)
    server.stop()


@pytest.fixture
def asterisk() -> Path:
    if not (ASTERISK / "metadata.jsonl").exists():
        pytest.skip(f"asterisk-dev corpus not found at {ASTERISK}")
    return ASTERISK


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_whisper(seed=0)`` saved as a transformers directory (read only)."""
    from distilflow.testing import save_tiny_whisper

    return save_tiny_whisper(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny teacher (read only). Seed 1: its greedy output is text (seed 0 emits bytes
    that normalise away); 4 decoder layers for students to take some from."""
    from distilflow.testing import save_tiny_whisper

    return save_tiny_whisper(tmp_path_factory.mktemp("teacher") / "model", seed=1, decoder_layers=4)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> Path:
    """The demo corpus ingested, labelled by the tiny teacher and filtered, in a folder of the
    module's own (its tests add students and experts there)."""
    from distilflow.config import load_params
    from distilflow.filter.stage import run_filter
    from distilflow.ingest.stage import ingest
    from distilflow.label.stage import load_clips, make_labeller, write_labels
    from distilflow.label.teacher import label_clips
    from distilflow.sources import iter_items
    from tasks.label import cache_for

    tmp = tmp_path_factory.mktemp("prepared")
    params = load_params(student_params(tmp, tiny_teacher))
    ingest(iter_items(params.ingest.sources), params.ingest)
    labeller = make_labeller(params.label, tmp / "cache")
    cache = cache_for(params.label, labeller)
    label_clips(load_clips(Path(params.ingest.out_dir)), labeller, cache, 8)
    write_labels(Path(params.ingest.out_dir), cache, params.label, labeller.teacher_id)
    run_filter(Path(params.label.out_dir), params.filter)
    return tmp


@pytest.fixture(scope="session")
def project_template(tmp_path_factory: pytest.TempPathFactory, tiny_teacher: Path) -> Path:
    """``make_project`` with its git and DVC repositories, built once a session; tests work on
    copies (``tiny_project``)."""
    proj = make_project(tmp_path_factory.mktemp("project"), tiny_teacher)
    init_repos(proj, project_env(proj))
    return proj


@pytest.fixture
def tiny_project(project_template: Path, tmp_path: Path) -> Path:
    """A copy of the tiny DVC project of its own in ``tmp_path/proj``, tracking in tmp_path."""
    return copy_project(project_template, tmp_path)
