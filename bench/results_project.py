"""The results run's project: a held-out test split of the corpus, a copy of the pipeline with
the results run's params, and every DVC stage run one at a time with its wall time and peak memory.

Used by ``bench.results``; nothing here is specific to one corpus but the split's seed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ("distilflow", "flows", "tasks")
SPLIT_SEED = "distilflow-results-test"
TRAIN, TEST = "train", "test"

# What the results run changes in params.yaml (the rest is the shipped default). The budgets fit
# a quiet 2-core CPU in about an hour; each is a figure of the page, written beside it.
OVERRIDES: dict[str, dict[str, Any]] = {
    "ingest": {"progress": False},
    "label": {"progress": False},
    # The pipeline's tables were measured with the earlier default student: 4 decoder layers
    # trained on the teacher's padded, frozen encoder. The shipped default (dynamic context, the
    # teacher's decoder frozen: `dynamic-6-top2`) is measured by bench.results_context and the
    # deployed phase; moving the tables to it means rerunning the pipeline and every phase after.
    "student": {
        "max_steps": 300, "batch_size": 8, "lr": 3.0e-4, "warmup_steps": 30,
        "eval_every": 100, "save_every": 25, "progress": False,
        "decoder_layers": 4, "audio_context": "padded", "context_multiple_s": 1.0,
        "freeze_encoder": True, "freeze_decoder": False, "encoder_top_layers": -1,
        "alpha_ce": 1.0, "temperature": 2.0, "decoder_mse": 0.0,
    },
    "experts": {"max_steps": 80, "eval_every": 40, "save_every": 20, "warmup_steps": 8,
                "progress": False},
    "evaluate": {"max_clips_per_language": 60},  # the test splits' size: all of them
    "export": {"verify_clips": 10},
}  # fmt: skip


def split_rows(
    rows: list[dict[str, Any]], test_per_language: int
) -> dict[str, list[dict[str, Any]]]:
    """Each language's ``test_per_language`` clips (seeded, by file name) for the test split, the
    rest for training. Pure: the same corpus always gives the same split."""
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_lang[str(r["language"])].append(r)
    out: dict[str, list[dict[str, Any]]] = {TRAIN: [], TEST: []}
    for lang in sorted(by_lang):
        group = sorted(by_lang[lang], key=lambda r: str(r["file_name"]))
        test = set(
            str(r["file_name"])
            for r in random.Random(f"{SPLIT_SEED}-{lang}").sample(
                group, min(test_per_language, len(group) // 2)
            )
        )
        for r in group:
            out[TEST if r["file_name"] in test else TRAIN].append(r)
    return out


def corpus_root(proj: Path, index: int, corpus: Path) -> Path:
    """Where the project holds a corpus: the first (the main one) in ``corpus/``, the others
    in ``corpus/<name>/``."""
    return proj / "corpus" if index == 0 else proj / "corpus" / corpus.name


def test_set_name(index: int, corpus: Path) -> str:
    """The evaluation set of a corpus's test split: ``test`` for the main corpus, else
    ``test-<name>``."""
    return TEST if index == 0 else f"{TEST}-{corpus.name}"


def read_rows(corpus: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (corpus / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def has_text(rows: list[dict[str, Any]]) -> bool:
    """Whether a corpus carries transcripts (one without is all training audio)."""
    return any(str(r.get("text") or "").strip() for r in rows)


def write_split(
    corpus: Path, proj: Path, test_per_language: int, root: Path | None = None
) -> dict[str, int]:
    """``root/train`` and ``root/test`` (default ``proj/corpus``): audiofolders with the clips
    copied in (ingestion refuses paths outside a source); a corpus without transcripts is all
    ``train``. Returns the clip count of each."""
    rows = read_rows(corpus)
    parts = split_rows(rows, test_per_language) if has_text(rows) else {TRAIN: rows}
    counts = {}
    for name, part in parts.items():
        root_dir = (root or proj / "corpus") / name
        for r in part:
            dst = root_dir / str(r["file_name"])
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(corpus / str(r["file_name"]), dst)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        meta = root_dir / "metadata.jsonl"
        if not meta.exists() or meta.read_text(encoding="utf-8") != lines:
            meta.write_text(lines, encoding="utf-8")
        counts[name] = len(part)
    return counts


def results_params(
    cache_dir: Path, corpora: list[tuple[str, bool]] | None = None
) -> dict[str, Any]:
    """The shipped params.yaml with the results run's overrides. ``corpora``: each corpus's
    folder in the project (relative, the main one first) and whether it has a test split;
    default: the main corpus alone, in ``corpus/``."""
    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for section, values in OVERRIDES.items():
        raw[section].update(values)
    raw["paths"]["cache_dir"] = str(cache_dir)  # the repo's model and encoder caches
    corpora = corpora or [("corpus", True)]
    raw["ingest"]["sources"] = [
        *({"kind": "audiofolder", "uri": f"{folder}/{TRAIN}"} for folder, _ in corpora),
        {"kind": "audiofolder", "uri": "inbox"},
    ]
    raw["evaluate"]["extra_sets"] = {
        (TEST if i == 0 else f"{TEST}-{Path(folder).name}"): f"{folder}/{TEST}"
        for i, (folder, tested) in enumerate(corpora)
        if tested
    }
    return raw


def write_project(
    work: Path, cache_dir: Path, corpora: list[tuple[str, bool]] | None = None
) -> Path:
    """The pipeline's code, dvc.yaml and params in ``work/project`` (git + DVC initialised once).
    Code is refreshed on every call; DVC then decides what is stale. ``corpora``: as
    ``results_params``."""
    proj = work / "project"
    for name in COPIED:
        shutil.rmtree(proj / name, ignore_errors=True)
        shutil.copytree(REPO / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "prefect.yaml"):
        shutil.copy(REPO / name, proj / name)
    params = yaml.safe_dump(results_params(cache_dir, corpora), sort_keys=False)
    (proj / "params.yaml").write_text(params, encoding="utf-8")
    (proj / "inbox").mkdir(exist_ok=True)
    (proj / "inbox" / "README.md").write_text("New clips for the results run (none).\n")
    env = stage_env(proj)
    if not (proj / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=proj, check=True, env=env)
        (proj / ".gitignore").write_text(
            ".prefect/\nmlflow.db\nmlruns/\n__pycache__/\n/corpus/\n/inbox/\n"
        )
    if not (proj / ".dvc").exists():
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=proj, check=True, env=env)
    subprocess.run(["git", "add", "-A", "."], cwd=proj, check=True, env=env)
    subprocess.run(
        ["git", "-c", "user.name=distilflow", "-c", "user.email=results@distilflow",
         "commit", "-q", "--allow-empty", "-m", f"results run of {repo_commit()}"],
        cwd=proj, check=True, env=env,
    )  # fmt: skip
    return proj


def repo_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def stage_env(proj: Path) -> dict[str, str]:
    """A user's shell in the project: the venv's tools first, offline, local MLflow store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(proj),
        DVC_NO_ANALYTICS="1",
        HF_HUB_OFFLINE="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        PWD=str(proj),
    )
    return env


def stage_order(params: dict[str, Any]) -> list[str]:
    """Every stage of dvc.yaml in an order that respects its dependencies. Pure."""
    experts = list(params["experts"]["languages"])
    scored = list(params["evaluate"]["languages"])
    return [
        "ingest", "label", "filter", "student",
        *(f"experts@{x}" for x in experts),
        *(f"evaluate-lang@{x}" for x in scored),
        *(f"evaluate-experts@{x}" for x in experts),
        "evaluate", "register", "export",
    ]  # fmt: skip


def run_stage(proj: Path, stage: str, log: Path) -> dict[str, Any]:
    """``dvc repro --single-item stage``: whether it ran, wall seconds, peak RSS of the stage's
    processes (MiB; the largest one, from the kernel's accounting of waited-for children)."""
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n=== {stage} ===\n")
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
            cwd=proj, env=stage_env(proj), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    text = log.read_text(encoding="utf-8").rsplit(f"=== {stage} ===", 1)[-1]
    if code != 0:
        raise RuntimeError(f"stage {stage!r} failed (exit {code}); see {log}:\n{text[-3000:]}")
    return {
        "stage": stage,
        "ran": bool(re.search(rf"Running stage '{re.escape(stage)}'", text)),
        "wall_s": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def run_pipeline(proj: Path, work: Path, until: str | None = None) -> list[dict[str, Any]]:
    """Every stage in order (up to ``until`` included); a stage DVC finds up to date keeps the
    record of the run that made it. Written to ``work/stages.json`` after each stage (a killed
    run resumes)."""
    params = yaml.safe_load((proj / "params.yaml").read_text(encoding="utf-8"))
    path = work / "stages.json"
    old = {s["stage"]: s for s in json.loads(path.read_text())} if path.exists() else {}
    done: list[dict[str, Any]] = []
    for stage in stage_order(params):
        record = run_stage(proj, stage, work / "pipeline.log")
        if not record["ran"] and stage in old:
            record = old[stage]  # the figures (and "ran") of the run that made its outputs
        print(json.dumps(record), flush=True)
        done.append(record)
        merged = {**old, **{s["stage"]: s for s in done}}
        path.write_text(json.dumps(list(merged.values()), indent=1) + "\n", encoding="utf-8")
        if stage == until:
            break
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status"], cwd=proj, env=stage_env(proj),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (work / "dvc_status.txt").write_text(status.stdout, encoding="utf-8")
    return done
