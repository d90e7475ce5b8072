"""Typed configuration: the only reader of ``params.yaml``.

Every option of every stage is a field of one frozen dataclass (:mod:`.sections`), and nowhere
else. Loading (:mod:`.load`) is strict: an unknown key, a missing key or a value of the wrong type
stops the run at start with a :class:`ConfigError` that names the file and the dotted key; the
rules that span fields are :mod:`.checks`.
"""

from __future__ import annotations

from distilflow.config.checks import inbox_source
from distilflow.config.load import DEFAULT_PARAMS, build_params, load_params
from distilflow.config.sections import (
    ConfigError,
    DecodeConfig,
    EvaluateConfig,
    ExpertsConfig,
    ExportConfig,
    FilterConfig,
    IngestConfig,
    LabelConfig,
    Params,
    PathsConfig,
    RegisterConfig,
    RetrainConfig,
    RunnerConfig,
    SourceConfig,
    StudentConfig,
    TrackingConfig,
    section_hash,
)

__all__ = [
    "DEFAULT_PARAMS",
    "ConfigError",
    "DecodeConfig",
    "EvaluateConfig",
    "ExpertsConfig",
    "ExportConfig",
    "FilterConfig",
    "IngestConfig",
    "LabelConfig",
    "Params",
    "PathsConfig",
    "RegisterConfig",
    "RetrainConfig",
    "RunnerConfig",
    "SourceConfig",
    "StudentConfig",
    "TrackingConfig",
    "build_params",
    "inbox_source",
    "load_params",
    "section_hash",
]
