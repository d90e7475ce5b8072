"""Lineage stamped on every artifact: git commit, params hash, input data hash, teacher id."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lineage:
    """Where an artifact came from."""

    git_commit: str  # HEAD of the repository that produced it, "+dirty" when uncommitted changes
    params_hash: str  # section_hash() of the config section(s) that produced it
    input_hash: str  # hash of the inputs it was computed from
    teacher_id: str | None = None  # model fingerprint of the teacher, for label-derived artifacts

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


# What "+dirty" looks at: every tracked file but DVC's lock files, which `dvc repro` rewrites
# as it goes (each stage after the first would otherwise record its own commit as dirty).
COMMITTED_CODE = (":(top)", ":(top,exclude,glob)**/dvc.lock")


def git_commit(cwd: Path | None = None) -> str:
    """HEAD commit, with "+dirty" when a tracked file other than a ``dvc.lock`` differs from it;
    "unknown" outside a repository."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *COMMITTED_CODE],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def combine_hashes(hashes: Iterable[str]) -> str:
    """One hash of many (order-independent): the input hash of a set of clips."""
    digest = hashlib.sha256()
    for h in sorted(hashes):
        digest.update(h.encode())
    return digest.hexdigest()[:16]
