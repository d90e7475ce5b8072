"""Prefect flows: orchestration only; the work is in tasks/ and the distilflow core."""

from tasks._env import apply_defaults

apply_defaults()
