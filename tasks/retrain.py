"""Prefect tasks of the parent ``retrain`` flow: plan the DVC targets, run them, report.

DVC decides what is stale: a full run is ``dvc repro`` (of ``retrain.full_stages``, or every
stage); a run for some languages reproduces, one stage at a time and without recursing into the
stages it does not name, ingest → label → filter → ``experts@<lang>``, ``evaluate-lang@<lang>``
and ``evaluate-experts@<lang>`` of those languages → evaluate (every language's results merged;
the other languages are not re-scored) → register. The student is not among them: new clips of
one language must not retrain every language's experts; the student learns them at the next full
run, and ``dvc status`` shows it stale until then.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from distilflow.config import Params

SHARED_STAGES = ("ingest", "label", "filter")  # every new clip passes through these
AFTER_EXPERTS = ("evaluate", "register")  # the languages' results merged, the release gated
_RAN = re.compile(r"Running stage '([^']+)'")
_FAILED = re.compile(r"failed to reproduce '([^']+)'")


class StageFailed(RuntimeError):
    """A DVC stage failed; what ran before it is committed and the next run resumes there."""

    def __init__(self, stage: str, completed: list[str], tail: str) -> None:
        super().__init__(
            f"stage {stage!r} failed; completed before it and kept: {completed or 'none'} "
            f"(the next run resumes at {stage!r}). Last output:\n{tail}"
        )
        self.stage, self.completed = stage, completed


@dataclass(frozen=True)
class Plan:
    """What one retrain run asks DVC to reproduce."""

    targets: list[str]  # dvc repro targets, in pipeline order ([] = the whole pipeline)
    single_item: bool  # reproduce each target alone, not the stale stages above it
    languages: list[str] | None  # the languages asked for; None = a full run
    skipped_languages: list[str]  # asked for, but without experts (the student learns them)


def plan_stages(params: Params, languages: Sequence[str] | None) -> Plan:
    """The DVC targets of a full run (``languages`` None) or of a run for some languages. Pure."""
    if languages is None:
        return Plan(list(params.retrain.full_stages), False, None, [])
    asked = sorted(set(languages))
    experts = [lang for lang in asked if lang in params.experts.languages]
    others = [lang for lang in asked if lang not in params.experts.languages]
    scored = [lang for lang in asked if lang in params.evaluate.languages]
    targets = [
        *SHARED_STAGES,
        *(f"experts@{lang}" for lang in experts),
        *(f"evaluate-lang@{lang}" for lang in scored),
        *(f"evaluate-experts@{lang}" for lang in experts),
        *AFTER_EXPERTS,
    ]
    return Plan(targets, True, asked, others)


def stages_ran(output: str) -> list[str]:
    """Stage names DVC reports running, in order. Pure."""
    return _RAN.findall(output)


def child_api_url() -> str | None:
    """The Prefect API the stages' own flows should report to: the configured server, or the
    temporary local server this process started (so they do not each start one)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        return str(url)
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None


def _dvc_env() -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    url = child_api_url()
    if url:
        env["PREFECT_API_URL"] = url
    return env


def _repro(cmd: list[str], project: Path) -> tuple[int, str]:
    """Run one ``dvc repro``, echoing its output as it comes (the stages' own logs)."""
    lines = []
    with subprocess.Popen(  # closes its stdout pipe on exit
        cmd,
        cwd=project,
        env=_dvc_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="")
            lines.append(line)
        code = proc.wait()
    return code, "".join(lines)


@task(name="dvc-repro", cache_policy=NO_CACHE, log_prints=True)
def reproduce(plan: Plan, project: Path) -> list[str]:
    """Reproduce the plan's targets; returns the stages that ran. A failure raises StageFailed
    naming the stage: DVC has committed every stage before it, so a rerun resumes there."""
    base = [sys.executable, "-m", "dvc", "repro"]
    calls = [[t] for t in plan.targets] if plan.single_item else [plan.targets]
    ran: list[str] = []
    for targets in calls:
        cmd = [*base, *(["--single-item"] if plan.single_item else []), *targets]
        code, out = _repro(cmd, project)
        ran += stages_ran(out)
        if code != 0:
            failed = _FAILED.findall(out)
            stage = failed[-1] if failed else (ran[-1] if ran else " ".join(targets) or "(all)")
            raise StageFailed(stage, [s for s in ran if s != stage], out[-4000:])
    return ran


@task(name="ensure-concurrency-limit", retries=2, retry_delay_seconds=[2, 10])
def ensure_concurrency_limit(name: str, slots: int = 1) -> None:
    """Create the global concurrency limit if the server does not have it yet."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots)
            )


def read_if_exists(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def summary_markdown(record: dict[str, Any], report_md: str | None) -> str:
    """The retrain run as a person reads it first: what ran, the decision, the report. Pure."""
    scope = (
        "full run" if record["languages"] is None else f"languages {', '.join(record['languages'])}"
    )
    ran = ", ".join(record["ran"]) or "nothing (every stage up to date)"
    lines = [f"# Retrain ({scope})", "", f"Stages run: {ran}"]
    if record["skipped_languages"]:
        lines.append(
            f"No experts for {', '.join(record['skipped_languages'])}: the student learns their "
            "new clips at the next full run."
        )
    decision = record.get("decision")
    if decision and "register" in record["ran"]:
        d = decision["decision"]
        lines += [
            "",
            f"Registry: {decision['model_name']} version {decision['version']} "
            f"**{d['verdict']}** (aliases: {', '.join(decision['aliases'])})",
            *[f"- {r}" for r in d["reasons"]],
        ]
    elif decision:
        lines += ["", f"Registry unchanged: version {decision['version']} ({decision['aliases']})"]
    if report_md:
        lines += ["", "---", "", report_md]
    return "\n".join(lines)
