"""The student stage: build the student and its data from the filtered labels, then train.

Outputs in ``student.out_dir``: ``model/`` (the best student: safetensors, processor, generation
config, ``distilflow_student.json``), ``checkpoints/`` (resumable), ``report.json``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from distilflow.atomic import atomic_write_json
from distilflow.config import StudentConfig, section_hash
from distilflow.decoding.greedy import evaluate_model, macro_mean
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.lineage import Lineage, combine_hashes, git_commit
from distilflow.models.convert import atomic_dir
from distilflow.models.device import pick_device
from distilflow.models.dynamic import DYNAMIC, set_audio_context
from distilflow.models.encoder_cache import EncoderCache, module_hash
from distilflow.student.build import save_student
from distilflow.training.data import (
    load_training_examples,
)
from distilflow.training.dynamic import DynamicLoss, DynamicStudentStates
from distilflow.training.loop import StatesFn, Tracker, Trainer, seed_training
from distilflow.training.states import EncoderStates, TrainableEncoderStates, build_examples


def make_student_for(cfg: StudentConfig, teacher: Any, cache_dir: Path) -> tuple[Any, list[int]]:
    """The student: layers copied from the teacher, or another checkpoint sharing its tokenizer."""
    from distilflow.student.build import make_student

    if cfg.init == "teacher":
        return make_student(teacher, cfg.layer_ids or cfg.decoder_layers)
    from distilflow.models import load_whisper

    student = load_whisper(cfg.init, cache_dir=cache_dir).model
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ValueError(f"student.init {cfg.init!r}: vocabulary differs from the teacher's")
    return student, []


def run_fingerprint(cfg: StudentConfig, data_hash: str, teacher_id: str) -> str:
    """What a checkpoint must match to be resumed (cadence and progress bar excluded)."""
    stable = {
        k: v for k, v in cfg.__dict__.items() if k not in ("progress", "eval_every", "save_every")
    }
    return hashlib.sha256(
        f"{sorted(stable.items())}|{data_hash}|{teacher_id}".encode()
    ).hexdigest()[:16]


def distil(
    cfg: StudentConfig,
    filtered_dir: Path,
    teacher_ref: str,
    cache_dir: Path,
    tracker: Tracker,
    accelerator: Any | None = None,
    guard: LoopGuard = DEFAULT_GUARD,
) -> dict[str, Any]:
    """Train the student on the filtered pseudo-labels; returns the report. Dev transcripts
    (the teacher's and the student's) are decoded with ``guard``, as evaluation decodes them.

    With an ``accelerator`` of several processes (one per rank under torchrun), every rank
    trains; the main one evaluates, saves, writes the report and is the only one to track.
    """
    from distilflow.models import load_whisper
    from distilflow.models.device import count_parameters

    seed_training(cfg.seed, cfg.deterministic)
    device = accelerator.device if accelerator is not None else pick_device(cfg.device)
    main = accelerator is None or bool(accelerator.is_main_process)
    loaded = load_whisper(teacher_ref, cache_dir=cache_dir)
    teacher, processor = loaded.model, loaded.processor
    teacher.to(device)  # type: ignore[arg-type]
    teacher.eval()  # type: ignore[no-untyped-call]
    teacher.requires_grad_(False)
    student, layer_ids = make_student_for(cfg, teacher, cache_dir)
    student = student.to(device)
    student.model.encoder.requires_grad_(not cfg.freeze_encoder)
    set_audio_context(student, cfg.audio_context, cfg.context_multiple_s)
    if cfg.audio_context == DYNAMIC:  # sliced, never trained: positions past the clip stay intact
        student.model.encoder.embed_positions.requires_grad_(False)

    df = load_training_examples(filtered_dir, None)
    if df.empty:
        raise RuntimeError(f"{filtered_dir}: no filtered clips to train on")
    gen = teacher.generation_config
    eos = int(gen.eos_token_id if isinstance(gen.eos_token_id, int) else gen.eos_token_id[0])
    train, dev = build_examples(df, gen, eos, cfg.dev_fraction)
    if not train:
        raise ValueError(
            f"{filtered_dir}: no training clips: all {len(dev)} kept clips fell in the dev split "
            f"(student.dev_fraction={cfg.dev_fraction}); add data or lower the fraction"
        )
    paths = dict(zip(df["hash"], df["audio_path"], strict=True))
    cache = (
        EncoderCache(cache_dir / "encoder", module_hash(teacher.model.encoder))
        if cfg.cache_encoder
        else None
    )
    states = EncoderStates(teacher.model.encoder, processor.feature_extractor, paths, cache, device)
    computed = states.warm(list(paths), cfg.progress)
    student_states: StatesFn | None = None
    loss_fn: DynamicLoss | None = None
    if cfg.audio_context == DYNAMIC:
        encoder, fe = student.model.encoder, processor.feature_extractor
        dynamic_states = DynamicStudentStates(encoder, fe, paths, cfg.context_multiple_s, device)
        student_states, loss_fn = dynamic_states, DynamicLoss(cfg, teacher, states, dynamic_states)
        lengths = dict(zip(df["hash"], df["duration_s"], strict=True))
        dev.sort(key=lambda c: float(lengths[c.hash]))  # length buckets (evaluate keeps order)
    elif not cfg.freeze_encoder:
        student_states = TrainableEncoderStates(
            student.model.encoder, processor.feature_extractor, paths, None, device
        )
    elif cfg.init != "teacher":
        own = (
            EncoderCache(cache_dir / "encoder", module_hash(student.model.encoder))
            if cache
            else None
        )
        student_states = EncoderStates(
            student.model.encoder, processor.feature_extractor, paths, own, device
        )

    out = Path(cfg.out_dir)
    data_hash = combine_hashes(df["hash"])
    fingerprint = run_fingerprint(cfg, data_hash, loaded.fingerprint)
    trainer = Trainer(
        student,
        teacher,
        processor,
        cfg,
        train,
        dev,
        states,
        student_states,
        out,
        fingerprint,
        device,
        accelerator,
        loss_fn=loss_fn,
        save_fn=save_student,
        guard=guard,
    )
    resumed = trainer.try_resume()
    teacher_wer: dict[str, float] = {}
    if main:
        teacher_wer, _ = evaluate_model(
            teacher, processor, dev, states, cfg.eval_max_new_tokens, guard=guard
        )
    state = trainer.run(tracker)
    if main:
        publish_model(trainer.best_dir(), out / "model")
    report = {
        "teacher": {
            "model": teacher_ref,
            "id": loaded.fingerprint,
            "dev_wer": teacher_wer,
            "dev_wer_mean": macro_mean(teacher_wer),
            "parameters": count_parameters(teacher),
        },
        "student": {
            "decoder_layers_from_teacher": layer_ids,
            "audio_context": cfg.audio_context,
            "parameters": count_parameters(student),
            "best_step": state.best_step,
            "dev_wer": state.best_wer,
            "dev_wer_mean": state.best_score,
        },
        "train_clips": len(train),
        "dev_clips": len(dev),
        "train_languages": dict(sorted(Counter(e.language for e in train).items())),
        "steps": state.step,
        "resumed": resumed,
        "encoder_states_computed": computed,
        "history": state.history,
        "lineage": Lineage(
            git_commit(), section_hash(cfg), data_hash, loaded.fingerprint
        ).to_dict(),
    }
    if main:
        atomic_write_json(out / "report.json", report)
    return report


def publish_model(src: Path, dst: Path) -> None:
    """Copy the best model to its stable path, replacing what was there."""
    if dst.exists():
        shutil.rmtree(dst)
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
