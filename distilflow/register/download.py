"""Consumers' side of the registry: download a registered model once, load it, transcribe.

One call::

    from distilflow.register.download import load_registered
    model = load_registered("models:/distilflow-student@champion")
    text = model.transcribe(audio, language="fr")  # float32 numpy, 16 kHz mono

The model decodes as the evaluation did (its token budget and repetition guard, recorded in the
model directory's ``distilflow_decode.json`` at registration) unless told otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from distilflow.register.pyfunc import WHISPER_ARTIFACT

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from distilflow.decoding.loop_guard import LoopGuard
    from distilflow.register.consumer import Backend, RegisteredWhisper


def _cache_root(cache_dir: Path | str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("DISTILFLOW_CACHE") or Path.home() / ".cache" / "distilflow"
    return Path(base) / "registry"


def pinned_uri(uri: str, client: MlflowClient) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` (other URIs unchanged)."""
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/") :].rsplit("@", 1)
        return f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
    return uri


def download_model(
    uri: str, cache_dir: Path | str | None = None, tracking: str | None = None
) -> Path:
    """Download a logged model (once per tracking server and version) and return its folder."""
    import mlflow

    uri_t = tracking or mlflow.get_tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri_t, registry_uri=tracking)
    pinned = pinned_uri(uri, client)
    root = _cache_root(cache_dir)
    dst = root / hashlib.sha256(f"{uri_t}|{pinned}".encode()).hexdigest()[:16]
    version_pinned = pinned.startswith("models:/") and pinned.rsplit("/", 1)[-1].isdigit()
    if version_pinned and (dst / ".complete").is_file():
        return dst  # registry versions are immutable: download once
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    source = pinned
    if version_pinned:  # resolved by this client: download_artifacts asks the global registry
        name, version = pinned[len("models:/") :].rsplit("/", 1)
        source = client.get_model_version_download_uri(name, version)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(staging), tracking_uri=uri_t
        )
    )  # the model folder: staging itself, or a folder inside it named as the source's last part
    (local / ".complete").write_text(pinned + "\n", encoding="utf-8")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(local, dst)
    shutil.rmtree(staging, ignore_errors=True)
    return dst


def whisper_dir(model_root: Path) -> Path:
    """The transformers directory inside a downloaded model (the pyfunc's artifact)."""
    mlmodel = model_root / "MLmodel"
    if mlmodel.is_file():
        spec = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
        artifacts = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        if WHISPER_ARTIFACT in artifacts:
            inner = (model_root / str(artifacts[WHISPER_ARTIFACT]["path"])).resolve()
            if not inner.is_relative_to(model_root.resolve()):
                raise ValueError(f"{mlmodel}: artifact path {inner} leaves the model folder")
            return inner
    if (model_root / "config.json").is_file():
        return model_root
    raise FileNotFoundError(f"{model_root}: no Whisper model directory in this model")


def load_registered(
    uri: str,
    cache_dir: Path | str | None = None,
    tracking: str | None = None,
    max_new_tokens: int | None = None,
    guard: LoopGuard | None = None,
    backend: Backend = "transformers",
) -> RegisteredWhisper:
    """Load a registered model for transcription: ``load_registered(uri).transcribe(audio, "fr")``.

    ``uri``: ``models:/<name>@<alias>`` (e.g. ``@champion``), ``models:/<name>/<version>``, or any
    MLflow artifact URI of a logged model. ``tracking``: the tracking (and registry) URI; default
    MLflow's (env ``MLFLOW_TRACKING_URI``). Downloads with MLflow into ``cache_dir`` (default
    ``$DISTILFLOW_CACHE/registry`` or ``~/.cache/distilflow/registry``), loads the weights
    from safetensors with transformers (no pickles, no remote code). It decodes with the token
    budget and repetition guard recorded at registration (``distilflow_decode.json``; defaults
    for a model registered without one); ``max_new_tokens`` and ``guard`` given here win.
    ``backend``: ``transformers`` or ``ctranslate2`` (clips up to 30 s through a CTranslate2
    int8 conversion: :meth:`RegisteredWhisper.from_dir`).
    """
    from distilflow.register.consumer import RegisteredWhisper

    directory = whisper_dir(download_model(uri, cache_dir, tracking))
    return RegisteredWhisper.from_dir(directory, max_new_tokens, guard, backend)
