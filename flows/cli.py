"""The `distilflow` command: run the pipeline, watch the inbox, see where things stand, use a model.

    distilflow run [--languages fr es]     retrain (full when no language is named)
    distilflow watch [--inline]            look for new audio in the inbox once
    distilflow status                      stale stages, registry versions, last decision and run
    distilflow transcribe FILE [--language fr] [--model models:/distilflow-student@champion]
                         [--format txt|srt|vtt|json] [--output FILE]   any length
                         [--backend transformers|ctranslate2]   ctranslate2: int8, faster on CPU
    distilflow promote VERSION [--force "reason"]   pass a version through the gate again
    distilflow export [--language fr]      CTranslate2 int8 export for faster-whisper
    distilflow deploy                      register prefect.yaml's deployments with the server

Every command reads ``params.yaml`` of ``--project`` (default: the current folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from distilflow.decoding.subtitles import FORMATS
from tasks._env import apply_defaults

apply_defaults()


def _project(args: argparse.Namespace) -> Path:
    root = Path(args.project).resolve()
    if not (root / "params.yaml").is_file():
        raise SystemExit(f"distilflow: {root}: no params.yaml here (use --project)")
    os.chdir(root)  # the stages' paths in params.yaml are relative to the project
    return root


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_run(args: argparse.Namespace) -> int:
    from flows.retrain import retrain_flow

    root = _project(args)
    record = retrain_flow(str(root), args.languages)
    if args.json:
        _print({k: record[k] for k in ("languages", "ran", "skipped_languages")})
    else:
        print("\n" + run_summary_of(root, record))
    return 0


def run_summary_of(root: Path, record: dict[str, Any]) -> str:
    """The run's summary (``distilflow.evaluate.summary``) from the files its stages wrote."""
    from distilflow.config import load_params
    from distilflow.evaluate.summary import run_summary
    from distilflow.register.tracking import tracking_uri, ui_command

    params = load_params(root / "params.yaml")
    out = root / params.evaluate.out_dir
    metrics_file, report = out / "metrics.json", out / "report.md"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return run_summary(
        record["ran"],
        metrics,
        record.get("decision"),
        str(report) if report.is_file() else None,
        ui_command(tracking_uri(params.tracking)),
    )


def cmd_watch(args: argparse.Namespace) -> int:
    from flows.watch import watch_flow

    result = watch_flow(str(_project(args)), inline=args.inline)
    _print({k: result.get(k) for k in ("new", "seen", "languages", "run")})
    return 0


def _last_line(path: Path) -> Any:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1]) if lines else None


def cmd_status(args: argparse.Namespace) -> int:
    from distilflow.config import load_params
    from distilflow.register.registry import registry_status

    root = _project(args)
    params = load_params(root / "params.yaml")
    dvc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    stale = sorted(json.loads(dvc.stdout or "{}")) if dvc.returncode == 0 else None
    decision_file = root / params.register.out_dir / "decision.json"
    decision = json.loads(decision_file.read_text()) if decision_file.is_file() else None
    last = _last_line(root / params.paths.data_dir / "retrain" / "runs.jsonl")
    status = {
        "stale_stages": stale if stale is not None else f"dvc status failed: {dvc.stderr.strip()}",
        "registry": registry_status(params.tracking, params.register.model_name),
        "last_decision": decision
        and {
            "version": decision["version"],
            "verdict": decision["decision"]["verdict"],
            "reasons": decision["decision"]["reasons"],
        },
        "last_retrain": last and {k: last[k] for k in ("finished", "languages", "ran")},
    }
    _print(status)
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from distilflow.atomic import atomic_write_bytes
    from distilflow.audio import load_audio
    from distilflow.config import load_params
    from distilflow.decoding.subtitles import render
    from distilflow.register.download import load_registered
    from distilflow.register.tracking import tracking_uri

    path = Path(args.file).resolve()
    params = load_params(_project(args) / "params.yaml")
    if not path.is_file():
        raise SystemExit(f"distilflow: {path}: no such file")
    model = load_registered(
        args.model, tracking=tracking_uri(params.tracking), backend=args.backend
    )
    audio = load_audio(path)
    if args.format == "txt":  # up to 30 s: decoded as the evaluation scored it
        text = model.transcribe(audio, language=args.language) + "\n"
    else:
        text = render(model.segments(audio, language=args.language), args.format, args.language)
    if args.output:
        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
    else:
        sys.stdout.write(text)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from distilflow.config import load_params
    from distilflow.register.registry import promote_version

    params = load_params(_project(args) / "params.yaml")
    record = promote_version(params.tracking, params.register, args.version, force=args.force)
    _print({k: record[k] for k in ("model_name", "version", "promoted", "aliases", "reasons")})
    return 0 if record["promoted"] else 1


def cmd_export(args: argparse.Namespace) -> int:
    from flows.export import export_flow

    result = export_flow(str(_project(args) / "params.yaml"), args.language)
    verification = result["verification"]
    _print({k: v for k, v in verification.items() if k not in ("per_clip", "faster_whisper")})
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """``prefect deploy --all`` from the project, creating the work pool first if needed."""
    root = _project(args)
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**os.environ, "PWD": str(root)}
    pools = subprocess.run(
        [prefect, "work-pool", "inspect", args.pool], cwd=root, env=env, capture_output=True
    )
    if pools.returncode != 0:
        subprocess.run(
            [prefect, "work-pool", "create", args.pool, "--type", "process"],
            cwd=root,
            env=env,
            check=True,
        )
    return subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=root, env=env).returncode


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distilflow", description=__doc__.splitlines()[0])
    p.add_argument("--project", default=".", help="the project folder (params.yaml, dvc.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="retrain: a full run, or the named languages only")
    run.add_argument("--languages", nargs="+", default=None)
    run.add_argument("--json", action="store_true", help="the run's record as JSON, no summary")
    run.set_defaults(func=cmd_run)
    watch = sub.add_parser("watch", help="look for new audio in the inbox once")
    watch.add_argument("--inline", action="store_true", help="retrain here, not via the server")
    watch.set_defaults(func=cmd_watch)
    sub.add_parser("status", help="stale stages, registry, last decision").set_defaults(
        func=cmd_status
    )
    tr = sub.add_parser("transcribe", help="transcribe an audio file with a registered model")
    tr.add_argument("file")
    tr.add_argument("--language", default=None, help="e.g. fr; default: detected")
    tr.add_argument("--model", default="models:/distilflow-student@champion")
    tr.add_argument(
        "--format",
        choices=FORMATS,
        default="txt",
        help="txt: the text; srt, vtt: subtitles; json: segments with times",
    )
    tr.add_argument("--output", default=None, help="write here (default: standard output)")
    tr.add_argument(
        "--backend",
        choices=("transformers", "ctranslate2"),
        default="transformers",
        help="ctranslate2: clips up to 30 s through a CTranslate2 int8 conversion (faster on CPU)",
    )
    tr.set_defaults(func=cmd_transcribe)
    pr = sub.add_parser("promote", help="pass a registered version through the gate again")
    pr.add_argument("version")
    pr.add_argument("--force", default=None, metavar="REASON", help="promote anyway, recorded")
    pr.set_defaults(func=cmd_promote)
    ex = sub.add_parser("export", help="CTranslate2 int8 export (faster-whisper)")
    ex.add_argument("--language", default=None, help="merge this language's experts")
    ex.set_defaults(func=cmd_export)
    dep = sub.add_parser("deploy", help="register prefect.yaml's deployments")
    dep.add_argument("--pool", default="distilflow")
    dep.set_defaults(func=cmd_deploy)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
