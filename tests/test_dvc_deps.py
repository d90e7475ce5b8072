"""dvc.yaml lists, for every stage, all the project code the stage runs (computed from imports)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .stage_imports import ROOT, missing_deps, stage_module, stages, transitive_files

STAGES = stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_all_the_code_it_runs(name: str) -> None:
    missing = missing_deps(STAGES[name])
    assert not missing, (
        f"dvc.yaml stage {name!r} runs these files but does not depend on them: {missing} "
        "(`python -m tests.stage_imports` prints what each stage needs)"
    )


def test_a_removed_dependency_is_caught(tmp_path: Path) -> None:
    """Drop the student stage's training folder from a copy of dvc.yaml: the check names it."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    deps = raw["stages"]["student"]["deps"]
    deps.remove("distilflow/training")
    copy = tmp_path / "dvc.yaml"
    copy.write_text(yaml.safe_dump(raw), encoding="utf-8")
    missing = missing_deps(stages(copy)["student"])
    assert "distilflow/training/loop.py" in missing
    assert all(m.startswith("distilflow/training/") for m in missing)


def test_imports_inside_functions_and_package_inits_count() -> None:
    runs = {str(p.relative_to(ROOT)) for p in transitive_files(stage_module(STAGES["student"]))}
    # distilflow/student/stage.py imports load_whisper inside distil(); models/__init__ runs too
    assert "distilflow/models/load.py" in runs
    assert {"distilflow/__init__.py", "distilflow/models/__init__.py"} <= runs
    assert "flows/student.py" in runs and "tasks/student.py" in runs


def test_every_stage_runs_a_flow_module() -> None:
    assert {stage_module(s).split(".")[0] for s in STAGES.values()} == {"flows"}
