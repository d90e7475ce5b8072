"""Prefect task wrapping student distillation, tracked in MLflow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import Params, section_hash
from distilflow.distill import distil
from distilflow.lineage import git_commit
from distilflow.registry import flat_params, tracking_run
from tasks.label import cache_dir_of


@task(name="distil-student", cache_policy=NO_CACHE)
def distil_student(params: Params) -> dict[str, Any]:
    """Train the student (resuming a killed run) and log it to MLflow."""
    cfg = params.student
    run_params = flat_params("student", asdict(cfg)) | {"teacher.model": params.teacher.model}
    tags = {"git_commit": git_commit(), "params_hash": section_hash(cfg), "stage": "student"}
    with tracking_run(params.tracking, "student", run_params, tags) as tracker:
        report = distil(
            cfg,
            Path(params.filter.out_dir),
            params.teacher.model,
            cache_dir_of(params.paths.cache_dir),
            tracker,
        )
        tracker.log_metrics(
            {
                "final/student_dev_wer_mean": report["student"]["dev_wer_mean"],
                "final/teacher_dev_wer_mean": report["teacher"]["dev_wer_mean"],
            },
            report["steps"],
        )
        tracker.log_artifacts(Path(cfg.out_dir) / "model", "model")
    s, t = report["student"], report["teacher"]
    print(
        f"student: {report['steps']} steps, dev WER {s['dev_wer_mean']:.3f} "
        f"(teacher {t['dev_wer_mean']:.3f}), {s['parameters']:,} parameters "
        f"(teacher {t['parameters']:,})"
    )
    return report
