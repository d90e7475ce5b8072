"""Retraining: plans, the inbox, the concurrency limit, and the deployments on a real server.

The end-to-end test deploys `prefect.yaml` to a real `prefect server` on 127.0.0.1 with a process
worker: a scheduled full run reproduces the whole (tiny) pipeline, a second `dvc repro` does
nothing, new French clips in the inbox make the watcher start a retrain of French only, whose
promotion decision is recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from distilflow.config import ConfigError, SourceConfig, inbox_source, load_params
from distilflow.ingest.inbox import (
    UNKNOWN,
    InboxClip,
    forget_runs,
    load_state,
    record_handed_on,
    scan,
)
from tasks.retrain import plan_stages, stages_ran, summary_markdown

from .helpers import (
    REPO_ROOT,
    audio_bytes,
    drop_into_inbox,
    project_env,
    read_params,
    run_in,
    tone,
    write_audiofolder,
    write_params,
)
from .stack import prefect_server, process_worker, venv_bin, wait_for_run

PREFECT = venv_bin("prefect")


def repo_params() -> Any:
    return load_params(REPO_ROOT / "params.yaml")


# --- plans ---------------------------------------------------------------------------------


def test_full_run_reproduces_everything() -> None:
    plan = plan_stages(repo_params(), None)
    assert plan.targets == [] and not plan.single_item and plan.languages is None


def test_language_run_retrains_only_those_experts() -> None:
    plan = plan_stages(repo_params(), ["ru", "fr", "fr"])
    assert plan.targets == [
        "ingest",
        "label",
        "filter",
        "experts@fr",
        "experts@ru",
        "evaluate-lang@fr",
        "evaluate-lang@ru",
        "evaluate-experts@fr",
        "evaluate-experts@ru",
        "evaluate",
        "register",
    ]
    assert plan.single_item and plan.languages == ["fr", "ru"] and plan.skipped_languages == []


def test_language_without_experts_is_reported() -> None:
    plan = plan_stages(repo_params(), ["en"])
    assert "student" not in plan.targets and not any(t.startswith("experts@") for t in plan.targets)
    assert plan.skipped_languages == ["en"]
    assert plan.targets == ["ingest", "label", "filter", "evaluate-lang@en", "evaluate", "register"]


def test_stages_ran_reads_dvc_output() -> None:
    out = (
        "Stage 'ingest' didn't change, skipping\nRunning stage 'label':\n> python -m flows.label\n"
        "Running stage 'experts@fr':\n"
    )
    assert stages_ran(out) == ["label", "experts@fr"]


def test_summary_names_stages_and_decision() -> None:
    decision = {
        "model_name": "m",
        "version": "3",
        "aliases": ["champion", "production"],
        "decision": {"verdict": "promoted", "reasons": ["fr: 0.40 -> 0.30"]},
    }
    record = {
        "languages": ["fr"],
        "ran": ["ingest", "experts@fr", "register"],
        "skipped_languages": [],
        "decision": decision,
    }
    md = summary_markdown(record, "# report")
    assert "languages fr" in md and "experts@fr" in md and "**promoted**" in md
    assert "fr: 0.40 -> 0.30" in md and md.endswith("# report")
    quiet = summary_markdown(record | {"ran": [], "languages": None}, None)
    assert "nothing (every stage up to date)" in quiet and "Registry unchanged" in quiet


# --- the inbox -----------------------------------------------------------------------------


def inbox_with(root: Path) -> SourceConfig:
    write_audiofolder(
        root,
        [
            {"file_name": "a.wav", "bytes": audio_bytes(tone(0.5)), "language": "fr"},
            {"file_name": "b.wav", "bytes": audio_bytes(tone(0.5, freq=300)), "language": "ES"},
            {"file_name": "c.wav", "bytes": audio_bytes(tone(0.5)), "language": "fr"},  # = a.wav
            {"file_name": "gone.wav", "language": "fr"},  # listed, missing
        ],
    )
    (root / "loose.wav").write_bytes(audio_bytes(tone(0.5, freq=900)))  # no metadata line
    return SourceConfig(kind="audiofolder", uri=str(root))


def test_scan_finds_new_content_by_hash(tmp_path: Path) -> None:
    source = inbox_with(tmp_path / "inbox")
    first = scan(source, seen=[])
    assert sorted(c.source_id for c in first.new) == ["a.wav", "b.wav", "loose.wav"]
    assert first.languages == ["es", "fr", UNKNOWN] and first.needs_full_run
    assert len(first.unreadable) == 1 and "gone.wav" in first.unreadable[0]
    again = scan(source, seen=[c.sha256 for c in first.new])
    assert again.new == [] and again.seen == 4  # c.wav is a.wav's bytes under another name
    # touching a file (new mtime, same bytes) is not new audio
    (tmp_path / "inbox" / "a.wav").write_bytes((tmp_path / "inbox" / "a.wav").read_bytes())
    assert scan(source, seen=[c.sha256 for c in first.new]).new == []


def test_scan_of_a_missing_inbox_folder_is_empty(tmp_path: Path) -> None:
    found = scan(SourceConfig(kind="audiofolder", uri=str(tmp_path / "none")), seen=[])
    assert found.new == [] and found.unreadable == []


def test_state_round_trip_and_failed_runs(tmp_path: Path) -> None:
    path = tmp_path / "state" / "watch.json"
    assert load_state(path) == {}
    a, b = InboxClip("h1", "fr", "a.wav"), InboxClip("h2", "es", "b.wav")
    state = record_handed_on(path, {}, [a], "run-1")
    state = record_handed_on(path, state, [b], "run-2")
    on_disk = load_state(path)
    assert (
        on_disk == state and on_disk["h1"]["run"] == "run-1" and on_disk["h2"]["language"] == "es"
    )
    assert set(forget_runs(on_disk, {"run-1"})) == {"h2"}
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(path)


def test_inbox_must_be_an_ingest_source() -> None:
    params = repo_params()
    assert inbox_source(params).uri == params.retrain.inbox
    from dataclasses import replace

    other = replace(params, retrain=replace(params.retrain, inbox="elsewhere"))
    with pytest.raises(
        ConfigError, match=r"retrain\.inbox: 'elsewhere' is not one of ingest\.sources"
    ):
        inbox_source(other)


# --- concurrency ---------------------------------------------------------------------------


def test_a_second_retrain_waits_for_the_first(prefect_harness: None, tmp_path: Path) -> None:
    """While one retrain holds the slot, another gives up after retrain.lock_timeout_s."""
    from prefect.concurrency.sync import concurrency

    from flows.retrain import retrain_flow
    from tasks.retrain import ensure_concurrency_limit

    proj = tmp_path / "proj"
    proj.mkdir()
    raw = read_params()
    raw["retrain"].update(concurrency_limit="test-retrain-lock", lock_timeout_s=2)
    write_params(proj / "params.yaml", raw)
    ensure_concurrency_limit.fn("test-retrain-lock")
    with concurrency("test-retrain-lock", strict=True):  # the running retrain
        state = retrain_flow(str(proj), ["fr"], return_state=True)
    assert state.is_failed()
    assert "TimeoutError" in repr(state.result(raise_on_failure=False))
    assert not (proj / "data").exists()  # it never started DVC


# --- deployments on a real server ----------------------------------------------------------


def fr_clips() -> list[dict[str, object]]:
    return [
        {
            "file_name": f"fr{i}.wav",
            "bytes": audio_bytes(tone(0.8 + 0.2 * i, freq=450 + 90 * i)),
            "text": f"mot {i}",
            "language": "fr",
        }
        for i in range(2)
    ]


def schedule_soon(proj: Path, seconds: int) -> str:
    """The test's prefect.yaml: retrain's weekly cron becomes one run ``seconds`` from now
    (same deployment otherwise); the watcher runs when the test asks."""
    spec = yaml.safe_load((proj / "prefect.yaml").read_text(encoding="utf-8"))
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    deployments = {d["name"]: d for d in spec["deployments"]}
    deployments["retrain"]["schedules"] = [
        {"interval": 3600, "anchor_date": at.isoformat(), "timezone": "UTC"}
    ]
    deployments["watch-inbox"]["schedules"] = []
    (proj / "prefect.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return at.isoformat()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two retrains of 13 and 8 stages: 6-10 min on 2 busy cores
def test_scheduled_and_triggered_retrains_on_a_real_server(
    tiny_project: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proj = tiny_project
    home = tmp_path / "prefect-home"
    logs = [tmp_path / "server.log", tmp_path / "worker.log"]
    fast_scheduler = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    with (
        prefect_server(home, logs[0], **fast_scheduler) as url,
        temporary_settings({PREFECT_API_URL: url}),
    ):
        env = project_env(proj, PREFECT_API_URL=url, PREFECT_HOME=str(home))
        # `distilflow deploy`: the process pool, then the real prefect.yaml as it is (weekly
        # cron, interval watcher, one slot each)
        run_in(proj, env, sys.executable, "-m", "flows.cli", "--project", str(proj), "deploy")
        with get_client(sync_client=True) as client:
            retrain = client.read_deployment_by_name("retrain/retrain")
            assert retrain.schedules[0].schedule.cron == "0 3 * * 0"  # type: ignore[union-attr]
            assert retrain.global_concurrency_limit is not None
            assert retrain.global_concurrency_limit.limit == 1
            assert retrain.concurrency_options is not None
            assert retrain.concurrency_options.collision_strategy == "ENQUEUE"
            assert retrain.parameters["project"] == str(proj)
            assert client.read_deployment_by_name("watch-inbox/watch-inbox").schedules
        schedule_soon(proj, 20)
        run_in(proj, env, PREFECT, "--no-prompt", "deploy", "--all")

        def runs_of(deployment: str) -> list[Any]:
            with get_client(sync_client=True) as client:
                return client.read_flow_runs(
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=[deployment])
                    ),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                )

        def first_run(deployment: str, **params: Any) -> Any | None:
            for run in runs_of(deployment):
                if all(run.parameters.get(k) == v for k, v in params.items()):
                    return run
            return None

        with process_worker("distilflow", proj, env, logs[1]):
            # 1. the schedule's run: a full retrain of the whole pipeline
            full = wait_for_run(lambda: first_run("retrain"), 600, "scheduled retrain", logs)
            assert full.state.type.value == "COMPLETED", full.state
            assert full.auto_scheduled
            records = read_runs(proj)
            assert records[-1]["languages"] is None
            assert {
                "ingest",
                "student",
                "experts@en",
                "experts@fr",
                *(f"evaluate-lang@{lang}" for lang in ("en", "fr")),
                "evaluate-experts@en",
                "evaluate-experts@fr",
                "evaluate",
                "register",
            } <= set(records[-1]["ran"])
            first_decision = read_json(proj / "data" / "registry" / "decision.json")
            assert first_decision["version"] == "1"
            report = read_json(proj / "data" / "ingest" / "report.json")
            assert (report["input"], report["kept"], report["quarantined"]) == (3, 2, 1)
            # 2. nothing changed: a second `dvc repro` runs nothing
            second = run_in(proj, env, sys.executable, "-m", "dvc", "repro")
            assert "Running stage" not in second and "didn't change" in second
            # 3. new French clips: the watcher starts a retrain of French only
            drop_into_inbox(proj, fr_clips())
            run_in(proj, env, PREFECT, "deployment", "run", "watch-inbox/watch-inbox")
            watch = wait_for_run(lambda: first_run("watch-inbox"), 300, "watcher", logs)
            assert watch.state.type.value == "COMPLETED", watch.state
            triggered = wait_for_run(
                lambda: first_run("retrain", languages=["fr"]), 600, "triggered retrain", logs
            )
            assert triggered.state.type.value == "COMPLETED", triggered.state
            assert not triggered.auto_scheduled
        last = read_runs(proj)[-1]
        assert last["languages"] == ["fr"]
        assert last["ran"] == [
            "ingest",
            "label",
            "filter",
            "experts@fr",
            "evaluate-lang@fr",
            "evaluate-experts@fr",
            "evaluate",
            "register",
        ]
        decision = read_json(proj / "data" / "registry" / "decision.json")
        assert decision["version"] == "2" and decision["decision"]["verdict"] in {
            "promoted",
            "rejected",
            "insufficient_evidence",  # a handful of dev clips a language: the usual outcome
        }
        assert decision["decision"]["reasons"]
        assert read_json(proj / "data" / "ingest" / "report.json")["kept"] == 4
        # the student (and what derives from all languages) waits for the next full run;
        # English's experts are untouched by French data
        status = run_in(proj, env, sys.executable, "-m", "dvc", "status")
        assert "student:" in status and "experts@en" not in status
        # nor are the other languages re-scored, nor left stale
        assert "evaluate-lang@en" not in status and "evaluate-experts@en" not in status
        state = load_state(proj / ".distilflow" / "watch-state.json")
        assert len(state) == 2 and {r["run"] for r in state.values()} == {str(triggered.id)}
        # 4. the watcher again: nothing new, no run
        with temporary_settings({PREFECT_API_URL: url}):
            from flows.watch import watch_flow

            again = watch_flow(str(proj))
        assert again["new"] == 0 and again["run"] is None
        assert len(runs_of("retrain")) >= 2
        check_cli(proj, env)


def cli_json(proj: Path, env: dict[str, str], *args: str) -> tuple[int, Any]:
    """Run ``distilflow --project proj ARGS``; (exit code, its JSON output)."""
    cmd = [sys.executable, "-m", "flows.cli", "--project", str(proj), *args]
    done = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def check_cli(proj: Path, env: dict[str, str]) -> None:
    """The `distilflow` command on the project the deployments ran."""
    _, status = cli_json(proj, env, "status")
    assert "student" in status["stale_stages"] and "experts@en" not in status["stale_stages"]
    assert [v["version"] for v in status["registry"]["versions"]] == ["2", "1"]
    assert status["last_retrain"]["languages"] == ["fr"]
    assert status["last_decision"]["version"] == "2"
    code, promoted = cli_json(proj, env, "promote", "2", "--force", "test: operator override")
    assert code == 0 and promoted["promoted"] and "champion" in promoted["aliases"]
    assert promoted["reasons"][0] == "forced by the operator: test: operator override"
    code, again = cli_json(proj, env, "promote", "2")
    assert code == 1 and again["reasons"] == ["version 2 is already the champion"]
    from flows.cli import run_summary_of

    summary = run_summary_of(proj, read_runs(proj)[-1])  # what `distilflow run` ends with
    assert "WER (macro mean over languages)" in summary and "teacher" in summary
    assert "Registry" in summary and "MLflow UI: " in summary and "report.md" in summary
    cmd = [sys.executable, "-m", "flows.cli", "--project", str(proj), "transcribe"]
    text = run_in(proj, env, *cmd, str(proj / "inbox" / "fr0.wav"), "--language", "fr")
    assert text.strip()  # a tiny random model: some text, not a failure
    srt = proj / "fr0.srt"
    wav = str(proj / "inbox" / "fr0.wav")
    run_in(proj, env, *cmd, wav, "--language", "fr", "--format", "srt", "--output", str(srt))
    cues = srt.read_text(encoding="utf-8")  # SubRip cues with their times (none if all blank)
    assert cues == "" or (cues.startswith("1\n") and " --> " in cues.splitlines()[1])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_runs(proj: Path) -> list[dict[str, Any]]:
    lines = (proj / "data" / "retrain" / "runs.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_a_failed_stage_keeps_what_ran_and_the_next_run_resumes(
    prefect_harness: None, tiny_project: Path, tmp_path: Path
) -> None:
    """The label stage fails (its teacher is missing): ingestion stays committed; once the
    teacher is back, the next retrain skips ingestion and resumes at labelling."""
    from prefect.settings import get_current_settings

    from flows.retrain import retrain_flow

    proj = tiny_project
    env = project_env(proj, PREFECT_API_URL=str(get_current_settings().api.url))
    raw = read_params(proj / "params.yaml")
    teacher = raw["label"]["model"]
    raw["label"]["model"] = str(tmp_path / "no-such-teacher")
    raw["retrain"]["full_stages"] = ["label"]  # ingest -> label: enough to show the resume
    write_params(proj / "params.yaml", raw)
    failed = retrain_flow(str(proj), return_state=True)
    assert failed.is_failed()
    message = str(failed.result(raise_on_failure=False))
    assert "stage 'label' failed; completed before it and kept: ['ingest']" in message
    assert "no-such-teacher': no such model directory" in message
    assert (proj / "data" / "ingest" / "report.json").is_file()
    raw["label"]["model"] = teacher
    write_params(proj / "params.yaml", raw)
    record = retrain_flow(str(proj))
    assert record["ran"] == ["label"]  # ingestion is not redone
    assert (proj / "data" / "labels" / "report.json").is_file()
    assert "Running stage" not in run_in(proj, env, sys.executable, "-m", "dvc", "repro", "label")
