"""What a language serves: the best dev checkpoint, with the student alone (step 0) a candidate.

Before training, the plain student is scored on the language's dev clips and becomes the best
checkpoint at step 0 (``seed_step_zero``); a trained step replaces it only with a strictly lower
dev WER (the training loop's rule). When none does, the best file is one that records no experts
(``distilflow.models.experts.save_no_experts``), the stage publishes it, and every consumer
(evaluation, registry, export) then runs the plain student for that language.

At the chosen checkpoint the experts are scored twice on dev: with the hard 0/1 gate, as served,
and with the soft gate ``sigmoid(G)`` (``chosen_serving``): the gap between the two is what a
soft-trained gate loses at serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from distilflow.config import ExpertsConfig
from distilflow.decoding.greedy import macro_mean
from distilflow.models.experts import detach_language, load_experts, set_soft_serving
from distilflow.training.loop import Tracker, Trainer, TrainState

TRAINED, STUDENT = "trained", "student"  # what a language serves (ExpertsReport.serves)


@dataclass(frozen=True)
class Serving:
    """What the stage publishes for a language, and its dev WER under each gate."""

    serves: str  # TRAINED: the best trained checkpoint; STUDENT: no step beat step 0
    hard_gate_dev_wer: float | None  # experts at the chosen step, hard gate (None: not experts)
    soft_gate_dev_wer: float | None  # the same experts with sigmoid(G) in place of the hard gate


def seed_step_zero(trainer: Trainer, wer: dict[str, float], tracker: Tracker) -> bool:
    """Make the plain student's dev score (``wer``, decoded before training) the best checkpoint
    at step 0, in the history and in the tracker. Without a dev score (no dev clip) there is
    nothing to compare: the first evaluated step is kept, as before. Call on a fresh run only
    (a resumed run already holds its step 0); False when nothing was seeded."""
    score = macro_mean(wer)
    if math.isnan(score) or not trainer.is_main:
        return False
    trainer.state.history.append({"step": 0, **wer})
    trainer.save_best(wer)  # through the stage's save_fn, which writes "no experts" at step 0
    tracker.log_metrics({f"dev/wer_{k}": v for k, v in wer.items()} | {"dev/wer_mean": score}, 0)
    return True


def chosen_serving(
    cfg: ExpertsConfig, trainer: Trainer, state: TrainState, language: str, best_file: Path
) -> Serving:
    """What the language serves once training ended. For experts trained to a winning step,
    ``trainer``'s model is left holding that step's experts (``best_file``); when step 0 won,
    it is left without experts (the student)."""
    if state.best_step == 0:
        if cfg.method == "experts":
            detach_language(trainer.student)
        return Serving(STUDENT, None, None)
    if cfg.method != "experts":
        return Serving(TRAINED, None, None)
    load_experts(trainer.student, best_file)
    hard = state.best_wer.get(language, math.nan)  # scored by the loop with the served gate
    set_soft_serving(trainer.student, True)
    try:
        soft = trainer.evaluate().get(language, math.nan)
    finally:
        set_soft_serving(trainer.student, False)
    return Serving(TRAINED, hard, soft)
