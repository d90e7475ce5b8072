"""MLflow tracking: where runs go, and the runs of the training stages.

The tracking URI is ``tracking.uri`` from params.yaml (SQLite by default, embedded and offline)
unless the environment sets ``MLFLOW_TRACKING_URI`` (a team server); the registry URI is
``MLFLOW_REGISTRY_URI`` or the tracking URI. Credentials for artifact stores come from the
environment only and are never logged. MLflow is imported only inside ``distilflow.register``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distilflow.config import TrackingConfig

# What this process itself put in the environment: mlflow.set_tracking_uri (and
# set_registry_uri) also export MLFLOW_TRACKING_URI (MLFLOW_REGISTRY_URI), which must not pass
# for the user's team set-up on the next run in the same process (a worker, a test session).
_SET_HERE: dict[str, str] = {}


def _user_env(var: str) -> str | None:
    value = os.environ.get(var)
    return value if value and value != _SET_HERE.get(var) else None


def tracking_uri(cfg: TrackingConfig) -> str:
    return _user_env("MLFLOW_TRACKING_URI") or cfg.uri


def registry_uri(cfg: TrackingConfig) -> str:
    return _user_env("MLFLOW_REGISTRY_URI") or tracking_uri(cfg)


def use_tracking(cfg: TrackingConfig, registry: bool = False) -> None:
    """Point this process's MLflow at the configured tracking (and registry) URIs."""
    import mlflow

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    _SET_HERE["MLFLOW_TRACKING_URI"] = uri
    if registry:
        reg = registry_uri(cfg)
        mlflow.set_registry_uri(reg)
        _SET_HERE["MLFLOW_REGISTRY_URI"] = reg


class MlflowTracker:
    """Logs metrics to the active MLflow run (NaN values are skipped: MLflow plots them badly)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import mlflow

        clean = {k.replace("/", "."): float(v) for k, v in metrics.items() if not math.isnan(v)}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_artifacts(self, path: Path, artifact_path: str) -> None:
        import mlflow

        mlflow.log_artifacts(str(path), artifact_path=artifact_path)


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    """``{"lr": 1e-4}`` -> ``{"student.lr": "0.0001"}``; MLflow params are strings. Pure."""
    return {f"{prefix}.{k}": str(v)[:500] for k, v in values.items()}


@contextmanager
def tracking_run(
    cfg: TrackingConfig, run_name: str, params: dict[str, str], tags: dict[str, str]
) -> Iterator[MlflowTracker]:
    """An MLflow run in ``cfg.experiment`` with params and lineage tags set."""
    import mlflow

    use_tracking(cfg)
    mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(params)
        yield MlflowTracker(run.info.run_id)


def ui_command(uri: str) -> str:
    """How a person opens the MLflow UI on ``uri``, with any password in it masked. Pure."""
    from urllib.parse import urlsplit, urlunsplit

    parts, shown = urlsplit(uri), uri
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        shown = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    if parts.scheme in ("http", "https", "databricks"):
        return f"open {shown}"
    return f"mlflow ui --backend-store-uri {shown}  (then http://127.0.0.1:5000)"
