"""Defaults for the orchestration stack, set before Prefect, MLflow or DVC are imported.

Everything stays local and offline unless the user's environment says otherwise: a user who
exports PREFECT_API_URL or MLFLOW_TRACKING_URI (the team set-up) overrides these defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS = {
    "PREFECT_HOME": str(REPO_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",  # transformers warns on every Whisper generate() call
    # transformers' and huggingface_hub's own bars ("Loading weights", "Writing model shards"):
    # under Prefect each refresh became a log line; distilflow's bars are unaffected
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def apply_defaults() -> None:
    """Set each default only where the environment does not already set it."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def cache_dir_of(configured: str) -> Path:
    """Model cache: env DISTILFLOW_CACHE wins over paths.cache_dir."""
    return Path(os.environ.get("DISTILFLOW_CACHE", configured))
