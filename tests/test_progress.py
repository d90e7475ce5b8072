"""Progress: tqdm's bar on a terminal; under Prefect, a line a tenth and a progress artifact."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from distilflow.progress import progress, report_progress_with, tqdm_bar, tracked
from tasks.progress import Milestones, artifact_key, milestone_line, prefect_progress, tenth


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger("distilflow-test-progress")
    logger.setLevel(logging.INFO)
    handler = Lines()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def test_pure_parts() -> None:
    assert milestone_line("label shard 3", 32, 64, "clips", 41.2) == (
        "label shard 3: 32/64 clips (50%), 41 s"
    )
    assert milestone_line("ingest", 7, None, "clips", 3.0, ", loss 0.5") == (
        "ingest: 7 clips, 3 s, loss 0.5"
    )
    assert [tenth(n, 20) for n in (0, 1, 2, 19, 20, 25)] == [0, 0, 1, 9, 10, 10]
    assert tenth(5, None) == 0
    assert artifact_key("Label shard 3") == "progress-label-shard-3"
    assert artifact_key("***") == "progress-loop"


def test_a_loop_logs_eleven_lines_whatever_its_length(
    lines: tuple[logging.Logger, Lines],
) -> None:
    logger, handler = lines
    with Milestones(1000, "distil", "step", 0, logger, artifacts=False) as bar:
        for _ in range(1000):
            bar.set_postfix(loss="0.125")
            bar.update(1)
    assert len(handler.lines) == 11  # started, 10% ... 90%, done
    assert handler.lines[0] == "distil: started, 1000 step"
    assert handler.lines[1].startswith("distil: 100/1000 step (10%), ")
    assert handler.lines[1].endswith(", loss 0.125")
    assert handler.lines[-1].startswith("distil done: 1000/1000 step (100%)")


def test_a_resumed_loop_counts_from_where_it_was(lines: tuple[logging.Logger, Lines]) -> None:
    logger, handler = lines
    bar = Milestones(100, "distil", "step", 75, logger, artifacts=False)
    for _ in range(25):
        bar.update(1)
    bar.close()
    bar.close()  # once only
    assert [line.split(",")[0] for line in handler.lines] == [
        "distil: started",
        "distil: 80/100 step (80%)",
        "distil: 90/100 step (90%)",
        "distil done: 100/100 step (100%)",
    ]


def test_the_core_reports_to_the_installed_reporter() -> None:
    seen: list[tuple[Any, ...]] = []

    def reporter(total: int | None, desc: str, unit: str, initial: int) -> Any:
        seen.append((total, desc, unit, initial))
        return tqdm_bar(total, desc, unit, initial)

    previous = report_progress_with(reporter)
    try:
        assert list(tracked(iter("abc"), progress(3, "x", unit="clip"))) == ["a", "b", "c"]
        progress(3, "quiet", enabled=False).close()  # disabled: the reporter is not asked
    finally:
        report_progress_with(previous)
    assert seen == [(3, "x", "clip", 0)]


def test_outside_a_prefect_run_the_bar_stays() -> None:
    from tqdm import tqdm

    bar = prefect_progress(3, "cli", "clip", 0)
    assert isinstance(bar, tqdm)
    bar.close()


def test_a_prefect_task_reports_milestones_and_a_progress_artifact(prefect_harness: None) -> None:
    """A real flow runs a task whose core loop reports progress (tasks/ installs the reporter)."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.context import get_run_context

    import tasks  # noqa: F401 (installs the Prefect reporter on import)
    from distilflow.progress import _reporter

    assert _reporter[0] is prefect_progress

    @task
    def loop() -> int:
        with progress(20, "unit test loop", unit="clip") as bar:
            for _ in range(20):
                bar.update(1)
        return 20

    @flow
    def run() -> str:
        loop()
        return str(get_run_context().flow_run.id)  # type: ignore[union-attr]

    run()
    key = ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key("unit test loop")]))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=key)
    assert artifacts and artifacts[0].type == "progress"
    assert float(artifacts[0].data) == 100.0  # type: ignore[arg-type]


def test_the_libraries_own_bars_are_off_by_default() -> None:
    """transformers' "Loading weights" / "Writing model shards" bars: a log line per refresh
    under Prefect. The stack's defaults turn them off unless the user's environment says."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from tasks._env import apply_defaults; apply_defaults(); "
        "from transformers.utils import logging; print(logging.is_progress_bar_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    root = Path(__file__).resolve().parents[1]
    for user, enabled in ((None, "False"), ("0", "True")):
        if user is not None:
            env["HF_HUB_DISABLE_PROGRESS_BARS"] = user
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == enabled
