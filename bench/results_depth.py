"""The results run's depth sweep: students of 2, 3, 4 and 6 decoder layers on the same data and
step budget, scored on the held-out test splits, and their decoding cost beside the teacher's.

Training is the student stage's own code (``distil``, the shipped recipe with
``student.decoder_layers`` changed; the pipeline's own student is reused for its depth); scoring
is the evaluation stage's own code (greedy, batch 1, language forced, the loop guard). Speed:
every model decodes exactly the teacher's tokens on the same clips, one after another in one
process (KV cache, one token a step), so depth is the only difference; the encoder, the same
for all, is timed once.

    python -m bench.results CORPORA... --phases depth
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.results_speed import forced_costs, test_rows
from distilflow.config import Params, StudentConfig, load_params
from distilflow.decoding.loop_guard import guard_of
from distilflow.evaluate.metrics import evaluate_pair, pair_metrics
from distilflow.evaluate.models import EvalModel
from distilflow.evaluate.sets import EvalSet, audiofolder_set
from distilflow.models import load_whisper
from distilflow.models.device import count_parameters
from distilflow.student.report import StudentReport
from distilflow.training.loop import NullTracker

DEPTHS = (2, 3, 4, 6)


def test_sets(proj: Path, params: Params) -> list[EvalSet]:
    """The held-out test splits (``evaluate.extra_sets`` named test*), capped as evaluated."""
    cap = params.evaluate.max_clips_per_language
    return [
        audiofolder_set(name, proj / path, cap)
        for name, path in sorted(params.evaluate.extra_sets.items())
        if name.startswith("test")
    ]


def depth_student(params: Params, depth: int, work: Path) -> tuple[Path, float | None]:
    """(model directory, training seconds) of the ``depth``-layer student: the pipeline's own at
    its depth where the student stage ran (None: trained by the stage), else trained here on the
    same data and budget (a finished run is found again: the stage resumes and skips)."""
    st = params.student
    own = Path(st.out_dir) / "model"
    if depth == st.decoder_layers and not st.layer_ids and own.exists():
        return own, None  # without it (the pipeline ran --until filter): trained below
    cfg = dataclasses.replace(
        st, decoder_layers=depth, layer_ids=[], out_dir=str(work / "depth" / f"layers-{depth}"),
        progress=False,
    )  # fmt: skip
    _, seconds = train_student(params, cfg)
    return Path(cfg.out_dir) / "model", seconds


def train_student(params: Params, cfg: StudentConfig) -> tuple[StudentReport, float]:
    """(report, seconds) of the student stage's own training with ``cfg`` on the run's data."""
    from distilflow.student.stage import distil

    start = time.perf_counter()
    report = distil(
        cfg,
        Path(params.filter.out_dir),
        params.label.model,
        Path(params.paths.cache_dir),
        NullTracker(),
        guard=guard_of(params.decode),
    )
    return report, round(time.perf_counter() - start, 1)


def score(params: Params, name: str, model_dir: Path, sets: list[EvalSet]) -> dict[str, Any]:
    """Metrics and per-clip transcripts of one model on every test set."""
    ev = params.evaluate
    model = EvalModel(name, str(model_dir), partial(load_whisper, str(model_dir), None))
    out: dict[str, Any] = {"sets": {}, "clips": {}}
    for s in sets:
        result = evaluate_pair(model, s, ev.max_new_tokens, ev.device, guard_of(params.decode))
        out["sets"][s.name] = pair_metrics(result)
        out["clips"][s.name] = [dataclasses.asdict(c) for c in result.clips]
        out["parameters"] = result.parameters
    return out


def decoding_cost(
    params: Params, models: dict[str, Path], proj: Path, per_language: int
) -> dict[str, Any]:
    """Encoder seconds a clip, and each model's decoder milliseconds a token on exactly the
    teacher's greedy tokens of the same test clips, one model after another in one process."""
    cache = Path(params.paths.cache_dir)
    loaded = load_whisper(params.label.model, cache_dir=cache)
    teacher, processor = loaded.model.eval(), loaded.processor
    nets = {"teacher": teacher} | {
        name: load_whisper(str(path), cache_dir=cache).model.eval() for name, path in models.items()
    }
    rows, corpus = test_rows(proj, per_language), proj / "corpus" / "test"
    enc_s, seconds, tokens = forced_costs(teacher, processor, nets, rows, corpus)
    return {
        "clips": len(rows),
        "tokens": tokens,
        "encoder_s_per_clip": round(enc_s / len(rows), 3),
        "decoder_ms_per_token": {k: round(1000 * v / tokens, 2) for k, v in seconds.items()},
        "parameters": {k: count_parameters(v) for k, v in nets.items()},
    }


def run_depth(proj: Path, work: Path, speed_per_language: int) -> dict[str, Any]:
    """Train (where needed) and score every depth; ``work/depth.json``."""
    os.chdir(proj)  # the project's relative paths (data/, corpus/)
    params = load_params(proj / "params.yaml")
    sets = test_sets(proj, params)
    out: dict[str, Any] = {"depths": {}, "pipeline_depth": params.student.decoder_layers}
    models: dict[str, Path] = {}
    for depth in DEPTHS:
        model_dir, train_s = depth_student(params, depth, work)
        models[f"layers-{depth}"] = model_dir
        out["depths"][str(depth)] = score(params, f"layers-{depth}", model_dir, sets) | {
            "train_s": train_s,
            "model_dir": str(model_dir),
        }
        print(json.dumps({"depth": depth, "train_s": train_s}), flush=True)
    out["cost"] = decoding_cost(params, models, proj, speed_per_language)
    (work / "depth.json").write_text(json.dumps(out, indent=1) + "\n")
    return out
