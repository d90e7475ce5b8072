"""Progress under Prefect: one line in the run's log at each tenth of a loop (every 30 s where
its length is unknown, as a streamed source) and a progress artifact in the UI, in place of
tqdm's bar, whose every refresh becomes a log line once the output is not a terminal. Outside a
Prefect run (the plain CLI, a torchrun rank) the bar stays. Installed by ``tasks/__init__.py``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from uuid import UUID

from distilflow.progress import Progress, tqdm_bar

EVERY_S = 30.0  # a loop of unknown length: a line this often


def artifact_key(desc: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) for a loop. Pure."""
    return "progress-" + (re.sub(r"[^a-z0-9]+", "-", desc.lower()).strip("-") or "loop")


def milestone_line(
    desc: str, n: int, total: int | None, unit: str, seconds: float, postfix: str = ""
) -> str:
    """``label shard 3: 32/64 clips (50%), 41 s``. Pure."""
    done = f"{n}/{total} {unit} ({100 * n / total:.0f}%)" if total else f"{n} {unit}"
    return f"{desc}: {done}, {seconds:.0f} s{postfix}"


def tenth(n: int, total: int | None) -> int:
    """How many whole tenths of ``total`` ``n`` has passed (0 without a total). Pure."""
    return min(10, 10 * n // total) if total else 0


class Milestones:
    """A loop's progress as log lines at each tenth and, with ``artifacts``, one Prefect
    progress artifact kept up to date."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        initial: int,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        artifacts: bool = True,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.logger = logger
        self.start = self.last = time.monotonic()
        self.tenths = tenth(initial, total)
        self.postfix = ""
        self.closed = False
        self.artifact: UUID | None = None
        if artifacts and total:
            from prefect.artifacts import create_progress_artifact

            made = create_progress_artifact(
                self.percent(), key=artifact_key(desc), description=f"{desc} ({total} {unit})"
            )
            self.artifact = made if isinstance(made, UUID) else None  # sync call: the id
        self.logger.info(f"{desc}: started, {total if total else 'unknown number of'} {unit}")

    def percent(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total:
            passed = tenth(self.n, self.total)
            if self.tenths < passed < 10:  # the end is close()'s line
                self.tenths = passed
                self.report(now)
        elif now - self.last >= EVERY_S:
            self.report(now)

    def report(self, now: float, desc: str | None = None) -> None:
        self.last = now
        line = milestone_line(
            desc or self.desc, self.n, self.total, self.unit, now - self.start, self.postfix
        )
        self.logger.info(line)
        if self.artifact is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact, self.percent())

    def set_postfix(self, **values: Any) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.report(time.monotonic(), f"{self.desc} done")

    def __enter__(self) -> Milestones:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefect_progress(total: int | None, desc: str, unit: str, initial: int) -> Progress:
    """Milestones inside a Prefect flow or task run, tqdm's bar outside one."""
    from prefect import get_run_logger
    from prefect.context import FlowRunContext, TaskRunContext

    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return tqdm_bar(total, desc, unit, initial)
    return Milestones(total, desc, unit, initial, get_run_logger())
