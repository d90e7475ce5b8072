"""export.language names experts to merge; a language whose experts lost to the student alone
exports the student, and the export says so."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from distilflow.config import load_params
from distilflow.experts.stage import spec_of
from distilflow.models.experts import expert_path, save_no_experts
from tasks.export import merged_language

from .helpers import REPO_ROOT


def test_experts_that_lost_to_the_student_are_not_merged(tmp_path: Path) -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    experts = dataclasses.replace(params.experts, out_dir=str(tmp_path / "experts"))
    plain = dataclasses.replace(params, experts=experts)
    assert merged_language(plain) is None  # export.language: null
    chosen = dataclasses.replace(plain, export=dataclasses.replace(params.export, language="fr"))
    path = expert_path(experts.out_dir, "fr")
    path.parent.mkdir(parents=True)
    save_no_experts(path, "fr", "base", spec_of(experts))
    assert merged_language(chosen) is None
