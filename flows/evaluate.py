"""Evaluation flow: teacher and student (and more) on the dev split and out-of-domain sets.

python -m flows.evaluate [--params params.yaml]            the whole evaluation, one process
python -m flows.evaluate --language fr [--experts]         one language's results (DVC
                                                           evaluate-lang@fr, evaluate-experts@fr)
python -m flows.evaluate --report                          merge every language's results,
                                                           peak memory, the report (DVC evaluate)

The (model, set) pairs are mapped over the task runner ``runner`` of params.yaml names: one
thread by default (timings stay honest), a Dask or a Ray cluster (``on_runner``); in Python,
``evaluate_language_flow.with_options(task_runner=...)``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow, unmapped
from prefect.artifacts import create_markdown_artifact

from distilflow.config import Params, load_params
from distilflow.decoding.loop_guard import guard_of
from distilflow.evaluate.metrics import PairResult
from distilflow.evaluate.models import EvalModel
from distilflow.evaluate.sets import EvalSet
from distilflow.evaluate.stage import of_language, part_models
from tasks.evaluate import (
    evaluate_model_on_set,
    load_eval_sets,
    merge_in_memory,
    merged_language_results,
    model_peak_memory,
    models_of,
    write_language_results,
    write_outputs,
)
from tasks.runners import on_runner, one_worker


def score_pairs(params: Params, models: list[EvalModel], sets: list[EvalSet]) -> list[PairResult]:
    """Every (model, set) pair mapped over the task runner, results in models x sets order."""
    pairs = [(m, s) for m in models for s in sets]
    if not pairs:
        return []
    ev = params.evaluate
    futures = evaluate_model_on_set.map(
        [m for m, _ in pairs],
        [s for _, s in pairs],
        unmapped(ev.max_new_tokens),
        unmapped(ev.device),
        unmapped(guard_of(params.decode)),
    )
    return list(futures.result())


def report(
    params: Params, models: list[EvalModel], sets: list[EvalSet], results: list[PairResult]
) -> dict[str, Any]:
    """Peak memory (one fresh process per model: these may run side by side), then the outputs."""
    ev = params.evaluate
    futures = {
        m.name: model_peak_memory.submit(m, sets, ev.max_new_tokens, ev.device) for m in models
    }
    memory = {name: future.result() for name, future in futures.items()}
    metrics, markdown = write_outputs(params, models, sets, results, memory)
    create_markdown_artifact(markdown, key="evaluation-report")
    return metrics


@flow(name="evaluate", log_prints=True, task_runner=one_worker())
def evaluate_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """The whole evaluation: language by language, as the per-language stages do, then merged."""
    params = load_params(params_path)
    sets = load_eval_sets(params)
    models = models_of(params)
    languages = sorted({c.language for s in sets for c in s.clips})
    per_language = [score_pairs(params, models, of_language(sets, lang)) for lang in languages]
    return report(params, models, sets, merge_in_memory(params, models, sets, per_language))


@flow(
    name="evaluate-language",
    log_prints=True,
    task_runner=one_worker(),
    flow_run_name="evaluate-{language}-{part}",
)
def evaluate_language_flow(
    params_path: str = "params.yaml", language: str = "en", part: str = "languages"
) -> str:
    """One language's results: the models of ``part`` (languages | experts) on its clips."""
    params = load_params(params_path)
    names = part_models(params, part, language)
    models = [m for m in models_of(params) if m.name in names]
    sets = load_eval_sets(params, language) if models else []
    results = score_pairs(params, models, sets)
    return str(write_language_results(params, part, language, sets, results))


@flow(name="evaluate-report", log_prints=True)
def evaluate_report_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Every language's results merged, peak memory, the outputs (the DVC ``evaluate`` stage)."""
    params = load_params(params_path)
    sets = load_eval_sets(params)
    models = models_of(params)
    return report(params, models, sets, merged_language_results(params, models, sets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--language", help="one language of evaluate.languages (its results only)")
    scope.add_argument("--report", action="store_true", help="merge the languages' results")
    parser.add_argument("--experts", action="store_true", help="with --language: the experts model")
    args = parser.parse_args()
    if args.experts and not args.language:
        parser.error("--experts needs --language")
    if args.language:
        part = "experts" if args.experts else "languages"
        print(on_runner(evaluate_language_flow, args.params)(args.params, args.language, part))
        return
    if args.report:
        metrics = evaluate_report_flow(args.params)
    else:
        metrics = on_runner(evaluate_flow, args.params)(args.params)
    print(json.dumps(metrics["models"], indent=2))


if __name__ == "__main__":
    main()
