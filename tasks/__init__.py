"""Prefect tasks: thin wrappers of the distilflow core (retries, caching, parallel maps)."""

from tasks._env import apply_defaults

apply_defaults()

from distilflow.progress import report_progress_with  # noqa: E402 (after the defaults)
from tasks.progress import prefect_progress  # noqa: E402

report_progress_with(prefect_progress)  # the core's loops report milestones, not bar refreshes
