"""Whisper models: load by reference, import CTranslate2 checkpoints, fetch registry weights.

Attributes are imported lazily, so ``import distilflow.models`` stays cheap until one is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilflow.models.convert import (
        atomic_dir,
        convert_ct2_dir,
        load_ct2_dir,
        save_whisper,
        whisper_generation_config,
        whisper_tokenizer,
    )
    from distilflow.models.ct2 import (
        Ct2FormatError,
        Ct2Model,
        WhisperDims,
        ct2_to_hf_state_dict,
        hf_to_ct2_variables,
        infer_dims,
        read_ct2_model,
        write_ct2_model,
    )
    from distilflow.models.load import (
        LoadedWhisper,
        ModelRefError,
        load_whisper,
        transformers_dir_fingerprint,
    )
    from distilflow.models.registry_whisper import (
        REGISTRY_MODELS,
        RegistryModel,
        RegistryModelError,
        cache_root,
        fetch_registry_model,
    )

_MODULES = {
    "convert": (
        "atomic_dir",
        "convert_ct2_dir",
        "load_ct2_dir",
        "save_whisper",
        "whisper_generation_config",
        "whisper_tokenizer",
    ),
    "ct2": (
        "Ct2FormatError",
        "Ct2Model",
        "WhisperDims",
        "ct2_to_hf_state_dict",
        "hf_to_ct2_variables",
        "infer_dims",
        "read_ct2_model",
        "write_ct2_model",
    ),
    "load": ("LoadedWhisper", "ModelRefError", "load_whisper", "transformers_dir_fingerprint"),
    "registry_whisper": (
        "REGISTRY_MODELS",
        "RegistryModel",
        "RegistryModelError",
        "cache_root",
        "fetch_registry_model",
    ),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "REGISTRY_MODELS",
    "Ct2FormatError",
    "Ct2Model",
    "LoadedWhisper",
    "ModelRefError",
    "RegistryModel",
    "RegistryModelError",
    "WhisperDims",
    "atomic_dir",
    "cache_root",
    "convert_ct2_dir",
    "ct2_to_hf_state_dict",
    "fetch_registry_model",
    "hf_to_ct2_variables",
    "infer_dims",
    "load_ct2_dir",
    "load_whisper",
    "read_ct2_model",
    "save_whisper",
    "transformers_dir_fingerprint",
    "whisper_generation_config",
    "whisper_tokenizer",
    "write_ct2_model",
]


def __getattr__(name: str) -> Any:
    """Import the public names on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
