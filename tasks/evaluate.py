"""Prefect tasks of the evaluation stage: one task per (model, eval set), so pairs can be mapped.

The flows map the pairs over their task runner, one worker by default: decoding two models side
by side on the same cores would distort the real-time factors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import Params
from distilflow.decoding.loop_guard import LoopGuard
from distilflow.evaluate.metrics import PairResult, evaluate_pair
from distilflow.evaluate.models import EvalModel
from distilflow.evaluate.report import write_evaluation
from distilflow.evaluate.results import results_path, write_results
from distilflow.evaluate.sets import EvalSet
from distilflow.evaluate.stage import (
    eval_models,
    eval_sets,
    language_record,
    measure_memory,
    params_hash,
    read_language_results,
    report_from,
)
from tasks._env import cache_dir_of


def models_of(params: Params) -> list[EvalModel]:
    """The models to evaluate, with the model cache the other stages use."""
    return eval_models(params, cache_dir_of(params.paths.cache_dir))


@task(name="load-eval-sets", cache_policy=NO_CACHE)
def load_eval_sets(params: Params, language: str | None = None) -> list[EvalSet]:
    """The student's dev split and the extra audiofolders (of one language, or of every one of
    ``evaluate.languages``), checked item by item."""
    sets = eval_sets(params, language)
    for s in sets:
        print(f"eval set {s.name}: {len(s.clips)} clips {s.counts()} (left out: {s.skipped})")
    return sets


@task(
    name="evaluate-pair",
    cache_policy=NO_CACHE,
    task_run_name="evaluate-{model.name}-{eval_set.name}",
)
def evaluate_model_on_set(
    model: EvalModel, eval_set: EvalSet, max_new_tokens: int, device: str, guard: LoopGuard
) -> PairResult:
    """Transcribe one set with one model, timing every clip."""
    result = evaluate_pair(model, eval_set, max_new_tokens, device, guard)
    seconds = sum(c.decode_s for c in result.clips)
    langs = ",".join(eval_set.languages())
    print(f"{model.name} on {eval_set.name} [{langs}]: {len(result.clips)} clips, {seconds:.1f} s")
    return result


@task(name="write-language-results", cache_policy=NO_CACHE)
def write_language_results(
    params: Params, part: str, language: str, sets: list[EvalSet], results: list[PairResult]
) -> Path:
    """One language's results.json (or experts.json), atomically, with lineage."""
    path = results_path(params.evaluate.out_dir, part, language)
    write_results(path, language_record(params, part, language, sets, results))
    print(f"{language}: {len(results)} (model, set) pairs -> {path}")
    return path


@task(name="read-language-results", cache_policy=NO_CACHE)
def merged_language_results(
    params: Params, models: list[EvalModel], sets: list[EvalSet]
) -> list[PairResult]:
    """Every language's results files, merged into one result per (model, set), checked."""
    return report_from(params, models, sets, read_language_results(params))


@task(name="merge-results", cache_policy=NO_CACHE)
def merge_in_memory(
    params: Params,
    models: list[EvalModel],
    sets: list[EvalSet],
    per_language: list[list[PairResult]],
) -> list[PairResult]:
    """The languages' results of this run, merged as the ``evaluate`` stage merges files."""
    return report_from(params, models, sets, per_language)


@task(name="peak-memory", cache_policy=NO_CACHE, task_run_name="peak-memory-{model.name}")
def model_peak_memory(
    model: EvalModel, sets: list[EvalSet], max_new_tokens: int, device: str
) -> float:
    """Peak memory (MiB) of loading the model and transcribing one clip, in a fresh process."""
    return measure_memory(model, sets, max_new_tokens, device)


@task(name="write-evaluation", cache_policy=NO_CACHE)
def write_outputs(
    params: Params,
    models: list[EvalModel],
    sets: list[EvalSet],
    results: list[PairResult],
    memory_mb: dict[str, float],
) -> tuple[dict[str, Any], str]:
    """metrics.json, plots/, report.md, report.json, transcripts.jsonl (atomic, with lineage)."""
    ev = params.evaluate
    return write_evaluation(
        Path(ev.out_dir), models, sets, results, memory_mb, params_hash(params),
        ev.explorer_audio_mb,
    )  # fmt: skip
