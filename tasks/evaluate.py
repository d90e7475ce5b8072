"""Prefect tasks of the evaluation stage: one task per (model, eval set), so pairs can be mapped.

The flow runs the pairs one at a time: decoding two models side by side on the same cores
would distort the real-time factors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import Params
from distilflow.eval_metrics import PairResult, evaluate_pair
from distilflow.eval_models import EvalModel
from distilflow.eval_report import write_evaluation
from distilflow.eval_sets import EvalSet
from distilflow.eval_stage import eval_models, eval_sets, measure_memory, params_hash
from tasks.label import cache_dir_of


def models_of(params: Params) -> list[EvalModel]:
    """The models to evaluate, with the model cache the other stages use."""
    return eval_models(params, cache_dir_of(params.paths.cache_dir))


@task(name="load-eval-sets", cache_policy=NO_CACHE)
def load_eval_sets(params: Params) -> list[EvalSet]:
    """The student's dev split and the extra audiofolders, checked item by item."""
    sets = eval_sets(params)
    for s in sets:
        print(f"eval set {s.name}: {len(s.clips)} clips {s.counts()} (left out: {s.skipped})")
    return sets


@task(
    name="evaluate-pair",
    cache_policy=NO_CACHE,
    task_run_name="evaluate-{model.name}-{eval_set.name}",
)
def evaluate_model_on_set(
    model: EvalModel, eval_set: EvalSet, max_new_tokens: int, device: str
) -> PairResult:
    """Transcribe one set with one model, timing every clip."""
    result = evaluate_pair(model, eval_set, max_new_tokens, device)
    seconds = sum(c.decode_s for c in result.clips)
    print(f"{model.name} on {eval_set.name}: {len(result.clips)} clips in {seconds:.1f} s")
    return result


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
    return write_evaluation(
        Path(params.evaluate.out_dir), models, sets, results, memory_mb, params_hash(params)
    )
