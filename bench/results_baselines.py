"""The results run's baselines: full fine-tuning and LoRA of the pipeline's student, per expert
language, on the experts stage's data and step budget, scored on the held-out test split.

Training is the experts stage's own code (``experts.method: finetune | lora``): the experts'
loss, distillation term included, on their data and step budget, each method at its own
learning rate option (``experts.finetune_lr``, ``experts.lora_lr``; ``method_lr``). Scoring is
the evaluation stage's own code (greedy, batch 1, language forced, the same measures), so the
rows compare like with like. Step 0 (the student alone) is a candidate for each baseline too:
where no step beats it, the baseline's file holds nothing and it is scored as the student.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from distilflow.config import ExpertsConfig, Params, load_params
from distilflow.decoding.loop_guard import guard_of
from distilflow.evaluate.metrics import evaluate_pair, language_metrics
from distilflow.evaluate.models import EvalModel
from distilflow.evaluate.sets import audiofolder_set
from distilflow.evaluate.stage import only_languages
from distilflow.experts.report import ExpertsReport
from distilflow.experts.schedule import method_lr
from distilflow.experts.stage import prepare_model, train_language
from distilflow.models.experts import expert_path
from distilflow.models.load import LoadedWhisper, load_whisper
from distilflow.training.loop import NullTracker

METHODS = ("finetune", "lora")


def baseline_config(experts: ExpertsConfig, method: str, out_dir: Path) -> ExpertsConfig:
    """The experts stage's settings (steps, batch, data, loss with its KD term) with ``method``;
    the stage trains it at the method's own learning rate option. Pure."""
    return dataclasses.replace(experts, method=method, out_dir=str(out_dir), progress=False)


def load_baseline(student_dir: str, cache_dir: str, cfg: ExpertsConfig, lang: str) -> LoadedWhisper:
    """The student with ``lang``'s baseline weights (fine-tuned tensors or LoRA adapters)."""
    from safetensors.torch import load_file

    loaded = load_whisper(student_dir, cache_dir=Path(cache_dir))
    prepare_model(loaded.model, cfg)
    state = load_file(str(expert_path(cfg.out_dir, lang)))
    missing, unexpected = loaded.model.load_state_dict(state, strict=False)
    if unexpected or any(k in missing for k in state):
        raise ValueError(f"{cfg.method} weights of {lang} do not fit the student: {unexpected}")
    loaded.model.eval()
    return loaded


def run_baselines(proj: Path, work: Path) -> dict[str, Any]:
    """Train and score every baseline; ``work/baselines.json``."""
    os.chdir(proj)  # the project's relative paths (data/, corpus/)
    params = load_params(proj / "params.yaml")
    cache = Path(params.paths.cache_dir)
    student_dir = Path(params.student.out_dir) / "model"
    test = audiofolder_set("test", proj / "corpus" / "test", params.evaluate.max_clips_per_language)
    out: dict[str, Any] = {}
    for method in METHODS:
        cfg = baseline_config(params.experts, method, work / "baselines" / method)
        for lang in params.experts.languages:
            out.setdefault(method, {})[lang] = one_baseline(
                params, cfg, lang, student_dir, cache, only_languages(test, [lang])
            )
            print(json.dumps({method: {lang: out[method][lang]}}), flush=True)
            (work / "baselines.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def one_baseline(
    params: Params, cfg: ExpertsConfig, lang: str, student_dir: Path, cache: Path, test: Any
) -> dict[str, Any]:
    start = time.perf_counter()
    report = train_language(
        cfg,
        lang,
        student_dir,
        Path(params.filter.out_dir),
        params.label.model,
        params.student.dev_fraction,
        cache,
        NullTracker(),
        guard_of(params.decode),
    )
    train_s = time.perf_counter() - start
    model = EvalModel(
        cfg.method,
        f"{student_dir} + {cfg.method}/{lang}",
        partial(load_baseline, str(student_dir), str(cache), cfg, lang),
    )
    ev = params.evaluate
    result = evaluate_pair(model, test, ev.max_new_tokens, ev.device, guard_of(params.decode))
    trained = report if isinstance(report, ExpertsReport) else None  # None: the language skipped
    return {
        "test": language_metrics(lang, result.clips),
        "clips": [dataclasses.asdict(c) for c in result.clips],  # for paired intervals
        "lr": method_lr(cfg),
        "serves": trained.serves if trained else "student",  # student: no step beat step 0
        "dev_wer": trained.dev_wer if trained else None,
        "student_dev_wer": trained.student_dev_wer if trained else None,
        "train_s": round(train_s, 1),
        "steps": trained.steps if trained else None,
        "train_clips": trained.train_clips if trained else None,
        "trained_parameters": trained.trained_parameters if trained else None,
        "inference_parameters": result.parameters,  # counted on the loaded model
    }
