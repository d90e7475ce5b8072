"""Task runners the flows map their tasks over."""

from __future__ import annotations

from typing import Any, cast

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner


def one_worker() -> TaskRunner[Any]:
    """Threads, one at a time: each task loads a model, and two would only share the cores.

    (Typed as the base class: prefect's ``flow(task_runner=...)`` expects ``TaskRunner`` of
    ``PrefectFuture`` and its generic is invariant.)
    """
    return cast("TaskRunner[Any]", ThreadPoolTaskRunner(max_workers=1))
