"""The evaluation stage: every model of ``evaluate.models`` on every eval set.

Eval sets: the student's dev split (``dev``) and the audiofolders of ``evaluate.extra_sets``.
Models: ``teacher`` (``teacher.model``) and ``student`` (``student.out_dir/model``).

Outputs in ``evaluate.out_dir`` (see ``eval_report.write_evaluation``): ``metrics.json`` (DVC
metrics; the layout is in ``eval_metrics``), ``plots/`` (DVC plots: ``metrics_by_language.csv``,
``models.json``, ``wer_by_language.png``, ``speed_vs_wer.png``), ``report.md`` (read it first),
``report.json`` (lineage, models, sets) and ``transcripts.jsonl``.

Pairs run one after another, never side by side: concurrent decoding would distort the speed.
The peak-memory measurements (one fresh process per model) may overlap.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distilflow.config import Params, section_hash
from distilflow.eval_metrics import PairResult, evaluate_pair
from distilflow.eval_models import EvalModel, peak_memory_mb, standard_models
from distilflow.eval_report import write_evaluation
from distilflow.eval_sets import (
    AudioClip,
    EmptyDevSplitError,
    EvalSet,
    audiofolder_set,
    dev_set,
)

log = logging.getLogger(__name__)


def eval_sets(params: Params) -> list[EvalSet]:
    """``dev`` then the extra sets, in the order params.yaml lists them."""
    ev = params.evaluate
    cap = ev.max_clips_per_language
    extra = [audiofolder_set(name, path, cap) for name, path in ev.extra_sets.items()]
    try:
        return [dev_set(Path(params.filter.out_dir), params.student.dev_fraction, cap), *extra]
    except EmptyDevSplitError as exc:
        if not extra:
            raise
        log.warning("%s; evaluating on the extra sets only", exc)
        return extra


def eval_models(params: Params, cache_dir: Path | None) -> list[EvalModel]:
    """The models of ``evaluate.models``, in that order."""
    return standard_models(
        params.evaluate.models,
        params.teacher.model,
        Path(params.student.out_dir) / "model",
        cache_dir,
        Path(params.experts.out_dir),
    )


def params_hash(params: Params) -> str:
    """Hash of every option the stage reads: the evaluate section, dev_fraction, teacher.model."""
    key = f"{section_hash(params.evaluate)}|{params.student.dev_fraction}|{params.teacher.model}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def memory_clip(eval_model: EvalModel, sets: Sequence[EvalSet]) -> tuple[str, AudioClip]:
    """The clip peak memory is measured on: the first clip (of the first set) the model covers."""
    for s in sets:
        for clip in s.clips:
            if eval_model.language in (None, clip.language):
                return s.name, clip
    raise ValueError(f"{eval_model.name}: no eval set holds a clip in {eval_model.language}")


def measure_memory(
    eval_model: EvalModel, sets: Sequence[EvalSet], max_new_tokens: int, device: str
) -> float:
    """Peak memory (MiB) of ``eval_model`` transcribing one clip, in a fresh process."""
    set_name, clip = memory_clip(eval_model, sets)
    return peak_memory_mb(eval_model, set_name, clip, max_new_tokens, device)


def run_evaluation(params: Params, cache_dir: Path | None) -> tuple[dict[str, Any], str]:
    """The whole stage in this process; returns (metrics, report markdown)."""
    ev = params.evaluate
    sets = eval_sets(params)
    models = eval_models(params, cache_dir)
    results: list[PairResult] = [
        evaluate_pair(m, s, ev.max_new_tokens, ev.device) for m in models for s in sets
    ]
    # Memory is per process: the models' measuring processes may run side by side.
    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        sizes = pool.map(lambda m: measure_memory(m, sets, ev.max_new_tokens, ev.device), models)
        memory = dict(zip([m.name for m in models], sizes, strict=True))
    return write_evaluation(Path(ev.out_dir), models, sets, results, memory, params_hash(params))
