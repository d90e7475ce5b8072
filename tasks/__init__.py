"""Prefect tasks: thin wrappers of the distilflow core (retries, caching, parallel maps)."""

from tasks._env import apply_defaults

apply_defaults()
