"""Prefect task wrapping student distillation, tracked in MLflow.

With ``student.processes: 1`` the student trains in the task's own process. With N > 1 the task
launches N ranks (``python -m torch.distributed.run``, what ``accelerate launch`` runs; one rank a
GPU, gloo on CPU) running ``python -m tasks.student_ranks``; rank 0 tracks and writes the report.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import Params, section_hash
from distilflow.decoding.loop_guard import guard_of
from distilflow.lineage import git_commit
from distilflow.register.tracking import flat_params, tracking_run
from distilflow.student.report import StudentReport
from distilflow.student.stage import distil
from distilflow.training.loop import NullTracker
from tasks._env import cache_dir_of


def run_distillation(params: Params, accelerator: Any | None = None) -> StudentReport:
    """Distil in this process (one rank of several when ``accelerator`` says so)."""
    cfg = params.student
    args = (
        cfg,
        Path(params.filter.out_dir),
        params.label.model,
        cache_dir_of(params.paths.cache_dir),
    )
    if accelerator is not None and not accelerator.is_main_process:
        return distil(*args, NullTracker(), accelerator, guard_of(params.decode))
    run_params = flat_params("student", asdict(cfg)) | {"label.model": params.label.model}
    tags = {"git_commit": git_commit(), "params_hash": section_hash(cfg), "stage": "student"}
    with tracking_run(params.tracking, "student", run_params, tags) as tracker:
        report = distil(*args, tracker, accelerator, guard_of(params.decode))
        finals = {
            "final/student_dev_wer_mean": report.student.dev_wer_mean,
            "final/teacher_dev_wer_mean": report.teacher.dev_wer_mean,
        }
        tracker.log_metrics(finals, report.steps)
        tracker.log_artifacts(Path(cfg.out_dir) / "model", "model")
    return report


def launch_ranks(params_path: str, processes: int, out_dir: str) -> StudentReport:
    """Run the ranks as child processes; the report is rank 0's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "tasks.student_ranks",
        "--params",
        params_path,
    ]
    subprocess.run(cmd, check=True)
    return StudentReport.read(Path(out_dir) / "report.json")


@task(name="distil-student", cache_policy=NO_CACHE)
def distil_student(params: Params, params_path: str) -> StudentReport:
    """Train the student (resuming a killed run) and log it to MLflow."""
    cfg = params.student
    if cfg.processes > 1:
        report = launch_ranks(params_path, cfg.processes, cfg.out_dir)
    else:
        report = run_distillation(params)
    s, t = report.student, report.teacher
    print(
        f"student: {report.steps} steps, dev WER {s.dev_wer_mean:.3f} "
        f"(teacher {t.dev_wer_mean:.3f}), {s.parameters:,} parameters "
        f"(teacher {t.parameters:,})"
    )
    return report
