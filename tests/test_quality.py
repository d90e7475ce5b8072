"""The code stays typed and clean: ruff and mypy (strict) over the project, as CI runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .helpers import REPO_ROOT

BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_and_format() -> None:
    lint = run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_on_the_core() -> None:
    done = run(str(BIN / "mypy"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_core_imports_no_orchestrator() -> None:
    """The ML core knows nothing of Prefect or DVC."""
    offenders = [
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "distilflow").rglob("*.py")
        if any(
            f"import {m}" in p.read_text() or f"from {m}" in p.read_text()
            for m in ("prefect", "dvc")
        )
    ]
    assert offenders == []
