"""Prefect task wrapping one language's expert training (or baseline), tracked in MLflow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import Params, section_hash
from distilflow.decoding.loop_guard import guard_of
from distilflow.experts.report import ExpertsReport, ExpertsSkipped
from distilflow.experts.select import STUDENT
from distilflow.experts.stage import train_language
from distilflow.lineage import git_commit
from distilflow.models.experts import expert_path
from distilflow.register.tracking import flat_params, tracking_run
from tasks._env import cache_dir_of


@task(name="train-experts", task_run_name="experts-{language}", cache_policy=NO_CACHE)
def train_experts(params: Params, language: str) -> ExpertsReport | ExpertsSkipped:
    """Train ``language``'s experts on the student (resuming a killed run); log to MLflow."""
    cfg = params.experts
    run_params = flat_params("experts", asdict(cfg)) | {
        "language": language,
        "label.model": params.label.model,
    }
    tags = {
        "git_commit": git_commit(),
        "params_hash": section_hash(cfg),
        "stage": "experts",
        "language": language,
    }
    with tracking_run(params.tracking, f"experts-{language}", run_params, tags) as tracker:
        report = train_language(
            cfg,
            language,
            Path(params.student.out_dir) / "model",
            Path(params.filter.out_dir),
            params.label.model,
            params.student.dev_fraction,
            cache_dir_of(params.paths.cache_dir),
            tracker,
            guard_of(params.decode),
        )
        if isinstance(report, ExpertsReport):
            final = {
                "final/student_dev_wer": report.student_dev_wer,
                "final/dev_wer": report.dev_wer,
            }
            if report.soft_gate_dev_wer is not None:  # the chosen experts with the soft gate
                final["final/soft_gate_dev_wer"] = report.soft_gate_dev_wer
            tracker.log_metrics(final, report.steps)
            tracker.log_artifacts(expert_path(cfg.out_dir, language).parent, "experts")
    if isinstance(report, ExpertsSkipped):
        print(f"experts {language}: skipped ({report.skipped}); inference keeps the shared path")
    else:
        print(
            f"experts {language} ({cfg.method}): dev WER {report.dev_wer:.3f} "
            f"(student alone {report.student_dev_wer:.3f}), "
            f"{report.trained_parameters:,} trained parameters"
        )
        if report.serves == STUDENT:
            print(f"experts {language}: no trained step beat the student alone; it serves it")
    return report
