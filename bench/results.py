"""Every figure of docs/RESULTS.md from one command: the whole pipeline on a real corpus with
real whisper-base, the baselines, speed, speculative decoding and labelling throughput.

    python -m bench.results ../shared/data/asterisk-dev [../shared/data/festvox-ru ...]
        [--work ~/.cache/distilflow/results] [--test-per-language 60]
        [--phases pipeline baselines speed labelling page]

1. ``pipeline``: of each corpus with transcripts, a held-out test split (``--test-per-language``
   clips a language, seeded by file name) is kept out of ingestion; the rest, and the whole of
   each corpus without transcripts (the teacher labels it, the filter judges it by the teacher's
   confidence), goes through every DVC stage of a copy of this project (``WORK/project``, its
   params: the shipped params.yaml with ``bench.results_project.OVERRIDES``), one
   ``dvc repro --single-item`` a stage, timed, with its peak memory. The evaluation scores
   teacher, student and student + experts on the test splits (extra set ``test`` for the first
   corpus, ``test-<name>`` for the others) and the dev split; the registry registers and gates
   the release.
2. ``baselines``: full fine-tuning and LoRA of the same student on the same data and step
   budget as the experts (the experts stage's own code, ``experts.method``), scored on the test
   split with the same decoding.
3. ``depth``: students of 2, 3, 4 and 6 decoder layers on the same data and budget, scored on
   the test splits, and their decoding cost beside the teacher's (bench/results_depth.py).
4. ``speed``: student, teacher and speculative decoding (student drafts, teacher verifies) on
   the test split, side by side in one process.
5. ``labelling``: the label stage's throughput against transformers' ASR pipeline.
6. ``context``: dynamic-context models trained by self-distillation against the padded
   teacher (bench/results_context.py); ``deployed``: they and the teacher served through
   CTranslate2 int8 against faster-whisper int8 on the test splits (bench/deployed.py).
7. ``page``: docs/RESULTS.md, docs/results/*.png and docs/bench/results.json; the phases this
   run lacks are taken from ``docs/bench/results_record.json`` where it was made from the same
   data and params, and the record is rewritten (``bench/results_record.py``; ``--no-record``:
   neither). On two CPU cores the whole run outlasts a working day: one day runs
   ``--phases pipeline baselines speed labelling page``, another
   ``--phases pipeline depth page --until filter`` (the stages up to the filter, so the depth
   sweep trains on the same clips, then the sweep: its 4-layer point is trained too).

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

from bench.results_project import (
    REPO,
    corpus_root,
    has_text,
    read_rows,
    run_pipeline,
    write_project,
    write_split,
)

PHASES = ("pipeline", "baselines", "depth", "speed", "labelling", "context", "deployed", "page")
STAGES = ("ingest", "label", "filter", "student")
RECORD = REPO / "docs" / "bench" / "results_record.json"


def stage_lock(proj: Path, stage: str) -> str:
    """The dvc.lock entry of ``stage`` (deps, params, outs with their hashes) as text."""
    import yaml

    lock = yaml.safe_load((proj / "dvc.lock").read_text(encoding="utf-8"))
    return json.dumps(lock["stages"].get(stage), sort_keys=True)  # null: not run (--until)


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
    parser.add_argument(
        "corpora", type=Path, nargs="+",
        help="audiofolders (metadata.jsonl + audio), the main one first (its test split: 'test')",
    )  # fmt: skip
    parser.add_argument(
        "--work", type=Path, default=Path.home() / ".cache" / "distilflow" / "results"
    )
    parser.add_argument("--test-per-language", type=int, default=60)
    parser.add_argument("--phases", nargs="+", choices=PHASES, help="recompute these only")
    parser.add_argument("--speed-clips", type=int, default=5, help="per language")
    parser.add_argument("--labelling-clips", type=int, default=40)
    parser.add_argument(
        "--until", choices=STAGES, help="pipeline: stop after this stage (e.g. filter, for depth)"
    )
    parser.add_argument(
        "--other-labels", action="store_true",
        help="page: take recorded phases made on other labels too (marked so on the page)",
    )  # fmt: skip
    parser.add_argument(
        "--no-record", action="store_true",
        help="page: neither complete it from docs/bench/results_record.json nor rewrite that",
    )  # fmt: skip
    args = parser.parse_args()
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpora = [c.resolve() for c in args.corpora]
    corpus = corpora[0]
    proj = work / "project"
    phases, forced = (args.phases, True) if args.phases else (list(PHASES), False)
    if "pipeline" in phases:
        write_corpora(work, corpora, args.test_per_language)
        run_pipeline(proj, work, args.until)
    if "baselines" in phases:
        from bench.results_baselines import run_baselines

        experts = json.dumps(params_section(proj, "experts"))
        inputs = (stage_lock(proj, "student"), stage_lock(proj, "filter"), experts)
        key = phase_key(*inputs, source("results_baselines"))
        run_phase(work, "baselines", key, forced, lambda: run_baselines(proj, work))
    if "depth" in phases:
        from bench.results_depth import run_depth

        student = json.dumps(params_section(proj, "student"))
        inputs = (stage_lock(proj, "student"), stage_lock(proj, "filter"), student)
        key = phase_key(*inputs, str(args.speed_clips), source("results_depth"))
        run_phase(work, "depth", key, forced, lambda: run_depth(proj, work, args.speed_clips))
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
    for phase in ("context", "deployed"):
        if phase in phases:
            from bench.results_deployed import run_context_and_deployed

            inputs = (stage_lock(proj, "filter"), source("results_context"), source("deployed"))
            key = phase_key(*inputs, str(args.test_per_language))
            run_phase(
                work, phase, key, forced, lambda p=phase: run_context_and_deployed(work, p),
            )  # fmt: skip
    if "page" in phases:
        from bench.results_page import write_page

        record = None if args.no_record else RECORD
        write_page(work, corpus, REPO / "docs", record, args.other_labels)


def write_corpora(work: Path, corpora: list[Path], test_per_language: int) -> Path:
    """The project with every corpus split into it; ``work/split.json``: the main corpus's
    counts (``train``, ``test``) and each corpus's under ``corpora``."""
    proj = work / "project"
    roots = [corpus_root(proj, i, c) for i, c in enumerate(corpora)]
    tested = [has_text(read_rows(c)) for c in corpora]
    layout = [(str(r.relative_to(proj)), t) for r, t in zip(roots, tested, strict=True)]
    proj = write_project(work, REPO / ".cache", layout)
    per_corpus = {
        c.name: write_split(c, proj, test_per_language, root)
        for c, root in zip(corpora, roots, strict=True)
    }
    split = {**per_corpus[corpora[0].name], "corpora": per_corpus}
    (work / "split.json").write_text(json.dumps(split) + "\n")
    return proj


def params_section(proj: Path, section: str) -> Any:
    import yaml

    return yaml.safe_load((proj / "params.yaml").read_text(encoding="utf-8"))[section]


if __name__ == "__main__":
    main()
