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

Every phase writes its JSON under WORK; a phase whose JSON exists is not recomputed unless
named in ``--phases`` again (the pipeline phase is always safe to re-run: DVC decides).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.results_project import REPO, run_pipeline, write_project, write_split

PHASES = ("pipeline", "baselines", "speed", "labelling", "page")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="an audiofolder (metadata.jsonl + audio)")
    parser.add_argument(
        "--work", type=Path, default=Path.home() / ".cache" / "distilflow" / "results"
    )
    parser.add_argument("--test-per-language", type=int, default=30)
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--speed-clips", type=int, default=5, help="per language")
    parser.add_argument("--labelling-clips", type=int, default=40)
    args = parser.parse_args()
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus.resolve()
    proj = work / "project"
    if "pipeline" in args.phases:
        proj = write_project(work, REPO / ".cache")
        counts = write_split(corpus, proj, args.test_per_language)
        (work / "split.json").write_text(json.dumps(counts) + "\n")
        run_pipeline(proj, work)
    if "baselines" in args.phases:
        from bench.results_baselines import run_baselines

        run_baselines(proj, work)
    if "speed" in args.phases:
        from bench.results_speed import run_speed

        run_speed(proj, work, args.speed_clips)
    if "labelling" in args.phases:
        from bench.results_speed import run_labelling

        run_labelling(corpus, work, args.labelling_clips)
    if "page" in args.phases:
        from bench.results_page import write_page

        write_page(work, corpus, REPO / "docs")


if __name__ == "__main__":
    main()
