"""Task runners the flows map their tasks over: ``runner`` in params.yaml."""

from __future__ import annotations

from typing import Any, cast

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from distilflow.config import RunnerConfig, load_params


def one_worker() -> TaskRunner[Any]:
    """Threads, one at a time: each task loads a model, and two would only share the cores.

    (Typed as the base class: prefect's ``flow(task_runner=...)`` expects ``TaskRunner`` of
    ``PrefectFuture`` and its generic is invariant.)
    """
    return cast("TaskRunner[Any]", ThreadPoolTaskRunner(max_workers=1))


def on_runner(flow_fn: Any, params_path: str) -> Any:
    """``flow_fn`` on the task runner of ``params_path``'s ``runner`` section."""
    return flow_fn.with_options(task_runner=task_runner(load_params(params_path).runner))


def task_runner(cfg: RunnerConfig) -> TaskRunner[Any]:
    """The configured runner: threads; a Dask scheduler (``address``) or a local Dask cluster of
    ``workers`` single-threaded processes; a Ray cluster (``address``) or a local Ray instance
    of ``workers`` CPUs."""
    if cfg.kind == "threads":
        return cast("TaskRunner[Any]", ThreadPoolTaskRunner(max_workers=cfg.workers))
    if cfg.kind == "dask":
        from prefect_dask.task_runners import DaskTaskRunner

        if cfg.address:
            return cast("TaskRunner[Any]", DaskTaskRunner(address=cfg.address))
        local = {"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True}
        return cast("TaskRunner[Any]", DaskTaskRunner(cluster_kwargs=local))
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "runner.kind ray needs prefect-ray: pip install '.[ray]' (or prefect-ray)"
        ) from exc
    if cfg.address:
        return cast("TaskRunner[Any]", RayTaskRunner(address=cfg.address))
    local = {"num_cpus": cfg.workers, "include_dashboard": False}
    return cast("TaskRunner[Any]", RayTaskRunner(init_kwargs=local))
