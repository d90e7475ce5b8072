"""Which project files each DVC stage runs, computed from the code (its transitive imports).

A stage's ``cmd`` runs one flow module (``python -m flows.<stage>``); every project module that
flow imports, directly or through others, at module level or inside a function, is code the stage
runs, and so is every package ``__init__`` on the way. dvc.yaml must list each of those files as a
dependency, itself or through a folder above it; :func:`missing_deps` says what it does not.

``python -m tests.stage_imports`` prints, for every stage, the files it runs and the ones dvc.yaml
misses; ``--write`` first rewrites dvc.yaml's code deps from the code.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distilflow", "flows", "tasks")  # the project's importable code


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if any."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def direct_imports(path: Path, root: Path = ROOT) -> frozenset[str]:
    """Project modules one file imports anywhere in it (functions and TYPE_CHECKING included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.removesuffix(".__init__")
    else:
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return frozenset(m for m in found if m.split(".")[0] in PACKAGES and module_file(m, root))


def transitive_files(module: str, root: Path = ROOT) -> set[Path]:
    """Every project file that importing ``module`` runs."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(p for p in _parents(name) if module_file(p, root))
        path = module_file(name, root)
        if path is not None:
            todo.extend(direct_imports(path, root))
    return {p for m in seen if (p := module_file(m, root)) is not None}


def stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages by name, a ``foreach`` stage by its ``do`` body."""
    raw = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    return {name: body.get("do", body) for name, body in raw.items()}


def stage_module(stage: dict[str, Any]) -> str:
    """The module a stage's ``cmd`` runs (``python -m flows.x ...``)."""
    match = re.search(r"python -m ([\w.]+)", stage["cmd"])
    if match is None:
        raise ValueError(f"cmd {stage['cmd']!r} does not run a python module")
    return match.group(1)


def covered(path: Path, deps: Iterable[str], root: Path = ROOT) -> bool:
    """Whether one of the dependencies is the file or a folder above it."""
    rel = path.relative_to(root)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def missing_deps(stage: dict[str, Any], root: Path = ROOT) -> list[str]:
    """Project files the stage runs that its deps do not cover, sorted."""
    deps = [str(d) for d in stage.get("deps", [])]
    runs = transitive_files(stage_module(stage), root)
    return sorted(str(p.relative_to(root)) for p in runs if not covered(p, deps, root))


def code_deps(stage: dict[str, Any], root: Path = ROOT) -> list[str]:
    """The code deps a stage needs: each ``distilflow`` subpackage it imports as a whole folder,
    every other file it runs by name. Sorted."""
    deps = set()
    for path in transitive_files(stage_module(stage), root):
        rel = path.relative_to(root)
        deps.add(str(Path(*rel.parts[:2])) if len(rel.parts) > 2 else str(rel))
    return sorted(deps)


def rewrite_code_deps(dvc_yaml: Path = ROOT / "dvc.yaml") -> str:
    """dvc.yaml's text with each stage's code deps (flows/, tasks/, distilflow/ entries) replaced
    by :func:`code_deps`; data deps, comments and everything else kept as written."""
    by_name = stages(dvc_yaml)
    out: list[str] = []
    current, indent = "", None
    for line in dvc_yaml.read_text(encoding="utf-8").split("\n"):
        header = re.match(r"^  ([\w-]+):", line)
        if header and header.group(1) in by_name:
            current = header.group(1)
        deps = re.match(r"^(\s+)deps:", line)
        if indent is not None and not line.startswith(f"{indent}- "):
            out.extend(f"{indent}- {d}" for d in code_deps(by_name[current]))
            indent = None
        if deps:
            indent = deps.group(1) + "  "
        elif indent is not None and re.match(rf"^{indent}- (flows|tasks|distilflow)/", line):
            continue
        out.append(line)
    return "\n".join(out)


def main() -> None:
    if sys.argv[1:] == ["--write"]:
        (ROOT / "dvc.yaml").write_text(rewrite_code_deps(), encoding="utf-8")
    for name, stage in stages().items():
        runs = sorted(str(p.relative_to(ROOT)) for p in transitive_files(stage_module(stage)))
        print(f"{name}: runs {len(runs)} project files; dvc.yaml misses {missing_deps(stage)}")
        print("  needs: " + " ".join(code_deps(stage)))


if __name__ == "__main__":
    main()
