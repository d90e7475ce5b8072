"""Every figure of docs/RESULTS.md from one command: the whole pipeline on a real corpus with
real whisper-base, the baselines, speed, speculative decoding and labelling throughput.

    python -m bench.results ../shared/data/asterisk-dev [--work ~/.cache/distilflow/results]
        [--test-per-language 30] [--phases pipeline baselines speed labelling page]

1. ``pipeline``: a held-out test split (``--test-per-language`` clips a language, seeded by file
   name) is kept out of ingestion; the rest goes through every DVC stage of a copy of this
   project (``WORK/project``, its params: the shipped params.yaml with
   ``bench.results_project.OVERRIDES``), one ``dvc repro --single-item`` a stage, timed, with
   its peak memory. The evaluation scores teacher, student and student + experts on the test
   split (extra set ``test``) and the dev split; the registry registers and gates the release.
2. ``baselines``: full fine-tuning and LoRA of the same student on the same data and step
   budget as the experts (the experts stage's own code, ``experts.method``), scored on the test
   split with the same decoding.
3. ``speed``: student, teacher and speculative decoding (student drafts, teacher verifies) on
   the test split, side by side in one process.
4. ``labelling``: the label stage's throughput against transformers' ASR pipeline.
5. ``page``: docs/RESULTS.md, docs/results/*.png and docs/bench/results.json.

Every phase writes its JSON under WORK. Without ``--phases``, a phase whose JSON was made from
the same inputs (the student and data DVC recorded, the phase's code and options: a key beside
the JSON) is reused, so re-running the command on an unchanged run only re-renders the page;
a phase named in ``--phases`` is always recomputed. The pipeline phase always runs: DVC decides.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results_project import REPO, run_pipeline, write_project, write_split

PHASES = ("pipeline", "baselines", "speed", "labelling", "page")


def stage_lock(proj: Path, stage: str) -> str:
    """The dvc.lock entry of ``stage`` (deps, params, outs with their hashes) as text."""
    import yaml

    lock = yaml.safe_load((proj / "dvc.lock").read_text(encoding="utf-8"))
    return json.dumps(lock["stages"][stage], sort_keys=True)


def phase_key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def source(module: str) -> str:
    return (REPO / "bench" / f"{module}.py").read_text(encoding="utf-8")


def run_phase(work: Path, name: str, key: str, forced: bool, run: Callable[[], Any]) -> None:
    """Run ``run`` unless ``work/name.json`` was made with ``key`` (and it is not forced)."""
    key_file = work / f"{name}.key"
    done = (work / f"{name}.json").exists() and key_file.exists()
    if not forced and done and key_file.read_text().strip() == key:
        print(f"{name}: up to date ({work / name}.json), reused")
        return
    run()
    key_file.write_text(key + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="an audiofolder (metadata.jsonl + audio)")
    parser.add_argument(
        "--work", type=Path, default=Path.home() / ".cache" / "distilflow" / "results"
    )
    parser.add_argument("--test-per-language", type=int, default=30)
    parser.add_argument("--phases", nargs="+", choices=PHASES, help="recompute these only")
    parser.add_argument("--speed-clips", type=int, default=5, help="per language")
    parser.add_argument("--labelling-clips", type=int, default=40)
    args = parser.parse_args()
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus.resolve()
    proj = work / "project"
    phases, forced = (args.phases, True) if args.phases else (list(PHASES), False)
    if "pipeline" in phases:
        proj = write_project(work, REPO / ".cache")
        counts = write_split(corpus, proj, args.test_per_language)
        (work / "split.json").write_text(json.dumps(counts) + "\n")
        run_pipeline(proj, work)
    if "baselines" in phases:
        from bench.results_baselines import run_baselines

        experts = json.dumps(params_section(proj, "experts"))
        inputs = (stage_lock(proj, "student"), stage_lock(proj, "filter"), experts)
        key = phase_key(*inputs, source("results_baselines"))
        run_phase(work, "baselines", key, forced, lambda: run_baselines(proj, work))
    if "speed" in phases:
        from bench.results_speed import run_speed

        key = phase_key(stage_lock(proj, "student"), str(args.speed_clips), source("results_speed"))
        run_phase(work, "speed", key, forced, lambda: run_speed(proj, work, args.speed_clips))
    if "labelling" in phases:
        from bench.results_speed import run_labelling

        meta = (corpus / "metadata.jsonl").read_bytes()
        key = phase_key(
            hashlib.sha256(meta).hexdigest(), str(args.labelling_clips), source("label_throughput")
        )
        run_phase(
            work, "labelling", key, forced,
            lambda: run_labelling(corpus, work, args.labelling_clips),
        )  # fmt: skip
    if "page" in phases:
        from bench.results_page import write_page

        write_page(work, corpus, REPO / "docs")


def params_section(proj: Path, section: str) -> Any:
    import yaml

    return yaml.safe_load((proj / "params.yaml").read_text(encoding="utf-8"))[section]


if __name__ == "__main__":
    main()
