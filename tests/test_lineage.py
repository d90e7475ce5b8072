"""Lineage's commit: "+dirty" when code differs from HEAD, not when `dvc repro` rewrote dvc.lock."""

from __future__ import annotations

import subprocess
from pathlib import Path

from distilflow.lineage import git_commit


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_dirty_means_changed_code_not_a_rewritten_dvc_lock(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "stage").mkdir()
    for name in ("dvc.lock", "stage/dvc.lock", "code.py"):
        (tmp_path / name).write_text("a\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git(tmp_path, "rev-parse", "HEAD")

    (tmp_path / "dvc.lock").write_text("rewritten by dvc repro\n")
    (tmp_path / "stage/dvc.lock").write_text("rewritten too\n")
    (tmp_path / "untracked.txt").write_text("not code of the commit\n")
    assert git_commit(tmp_path) == head
    assert git_commit(tmp_path / "stage") == head  # from a subfolder, too

    (tmp_path / "code.py").write_text("changed\n")
    assert git_commit(tmp_path / "stage") == f"{head}+dirty"


def test_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"
