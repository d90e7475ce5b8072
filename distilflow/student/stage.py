"""The student stage: build the student and its data from the filtered labels, then train.

Outputs in ``student.out_dir``: ``model/`` (the best student: safetensors, processor, generation
config, ``distilflow_student.json``), ``checkpoints/`` (resumable), ``report.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilflow.atomic import atomic_write_json
from distilflow.config import StudentConfig, section_hash
from distilflow.decoding.greedy import evaluate_model, macro_mean
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.lineage import Lineage, git_commit
from distilflow.models.convert import atomic_dir
from distilflow.models.device import pick_device
from distilflow.models.dynamic import DYNAMIC, RECORD, set_audio_context
from distilflow.student.build import save_student
from distilflow.student.report import StudentReport, StudentSummary, TeacherSummary
from distilflow.training.data import load_training_examples
from distilflow.training.dynamic import DynamicLoss, DynamicStudentStates, set_trainable_encoder
from distilflow.training.loop import StatesFn, Tracker, Trainer, TrainState, seed_training
from distilflow.training.prepare import (
    RunData,
    eos_of,
    frozen_states,
    load_frozen_teacher,
    run_data,
    student_states,
)
from distilflow.training.states import EncoderStates
from distilflow.training.targets import rule_of

if TYPE_CHECKING:
    from distilflow.models.load import LoadedWhisper


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


@dataclass
class StudentRun:
    """Everything the student's training needs, built by ``prepare``."""

    teacher: LoadedWhisper  # frozen on the device
    student: Any
    layer_ids: list[int]  # teacher decoder layers copied ([] for another checkpoint)
    data: RunData
    teacher_states: EncoderStates
    student_states: StatesFn | None  # None: the teacher's encoder, so the teacher's states
    loss_fn: DynamicLoss | None  # None: the loop's own loss
    computed: int  # teacher encoder states computed (not found in the cache)


def distil(
    cfg: StudentConfig,
    filtered_dir: Path,
    teacher_ref: str,
    cache_dir: Path,
    tracker: Tracker,
    accelerator: Any | None = None,
    guard: LoopGuard = DEFAULT_GUARD,
) -> StudentReport:
    """Train the student on the filtered pseudo-labels; returns the report. Dev transcripts
    (the teacher's and the student's) are decoded with ``guard``, as evaluation decodes them.

    With an ``accelerator`` of several processes (one per rank under torchrun), every rank
    trains; the main one evaluates, saves, writes the report and is the only one to track.
    """
    seed_training(cfg.seed, cfg.deterministic)
    device = accelerator.device if accelerator is not None else pick_device(cfg.device)
    main = accelerator is None or bool(accelerator.is_main_process)
    run = prepare(cfg, filtered_dir, teacher_ref, cache_dir, device)
    trainer = make_trainer(cfg, run, device, accelerator, guard)
    resumed = trainer.try_resume()
    teacher_wer: dict[str, float] = {}
    if main:
        teacher_wer = teacher_dev_wer(run, cfg.eval_max_new_tokens, guard, cache_dir)
    state = trainer.run(tracker)
    out = Path(cfg.out_dir)
    if main:
        publish_model(trainer.best_dir(), out / "model")
    report = student_report(cfg, teacher_ref, run, state, teacher_wer, resumed)
    if main:
        report.write(out / "report.json")
    return report


def teacher_dev_path(
    cache_dir: Path, teacher_id: str, dev: list[Any], max_new_tokens: int, guard: LoopGuard
) -> Path:
    """Where the teacher's dev WER is kept: a hash of the teacher's weights, the dev clips and
    their references, and the decoding. Pure."""
    clips = sorted((c.hash, c.language, c.reference) for c in dev)
    what = json.dumps([teacher_id, clips, max_new_tokens, repr(guard)])
    return cache_dir / "teacher_dev" / f"{hashlib.sha256(what.encode()).hexdigest()[:24]}.json"


def teacher_dev_wer(
    run: StudentRun, max_new_tokens: int, guard: LoopGuard, cache_dir: Path
) -> dict[str, float]:
    """The teacher's dev WER by language, kept in ``cache_dir/teacher_dev/`` under a hash of
    what decides it (the teacher's weights, the dev clips and references, the decoding): a
    re-run or another student on the same data does not decode the dev split again."""
    path = teacher_dev_path(cache_dir, run.teacher.fingerprint, run.data.dev, max_new_tokens, guard)
    if path.exists():
        return {k: float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    loaded = run.teacher
    wer, _ = evaluate_model(
        loaded.model, loaded.processor, run.data.dev, run.teacher_states, max_new_tokens,
        guard=guard,
    )  # fmt: skip
    atomic_write_json(path, wer)
    return wer


def prepare(
    cfg: StudentConfig, filtered_dir: Path, teacher_ref: str, cache_dir: Path, device: Any
) -> StudentRun:
    """The frozen teacher, the student made from it, the examples and both encoders' states
    (the teacher's filled into the cache), in the order that fixes the student's initial
    weights: the caller has seeded, the teacher loads, then the student is created."""
    loaded = load_frozen_teacher(teacher_ref, cache_dir, device)
    teacher = loaded.model
    student, layer_ids = make_student_on(cfg, teacher, cache_dir, device)
    df = load_training_examples(filtered_dir, None)
    if df.empty:
        raise RuntimeError(f"{filtered_dir}: no filtered clips to train on")
    data = run_data(df, loaded, cfg.dev_fraction, rule_of(cfg), cache_dir)
    if not data.train:
        raise ValueError(
            f"{filtered_dir}: no training clips: {len(data.dev)} kept clips fell in the dev split "
            f"(student.dev_fraction={cfg.dev_fraction}) and none of the others has a target "
            f"under student.targets={cfg.targets!r}; add data, lower the fraction or use "
            "targets: reference"
        )
    fe = loaded.processor.feature_extractor
    cached = cache_dir if cfg.cache_encoder else None
    states = frozen_states(teacher.model.encoder, fe, data.paths, cached, device)
    computed = states.warm(list(data.paths), cfg.progress)
    own, loss_fn = student_side(cfg, student, teacher, states, data, cached)
    if loss_fn is not None and cfg.l2s_weight > 0:  # Distill-L2S on the trained encoder
        from distilflow.training.l2s import clip_texts, make_l2s_loss

        loss_fn.alignment = make_l2s_loss(
            student,
            loaded.processor.tokenizer,
            clip_texts(df, data.windows),
            cfg.text_model,
            cfg.l2s_warmup_steps,
            cfg.l2s_distance,
            eos_of(teacher.generation_config),
            cached,
        )
    return StudentRun(loaded, student, layer_ids, data, states, own, loss_fn, computed)


def make_student_on(
    cfg: StudentConfig, teacher: Any, cache_dir: Path, device: Any
) -> tuple[Any, list[int]]:
    """The student on ``device``, its encoder trainable or not and set to its audio context."""
    student, layer_ids = make_student_for(cfg, teacher, cache_dir)
    student = student.to(device)
    student.model.encoder.requires_grad_(False)
    if not cfg.freeze_encoder:
        set_trainable_encoder(student.model.encoder, cfg.encoder_top_layers)
    if cfg.freeze_decoder:
        student.model.decoder.requires_grad_(False)
    set_audio_context(student, cfg.audio_context, cfg.context_multiple_s, cfg.context_margin_s)
    if cfg.audio_context == DYNAMIC:  # sliced, never trained: positions past the clip stay intact
        student.model.encoder.embed_positions.requires_grad_(False)
    if cfg.freeze_embeddings:  # the tied token embedding (also the output layer) and positions
        student.model.decoder.embed_tokens.requires_grad_(False)
        student.model.decoder.embed_positions.requires_grad_(False)
    return student, layer_ids


def student_side(
    cfg: StudentConfig,
    student: Any,
    teacher: Any,
    states: EncoderStates,
    data: RunData,
    cache_dir: Path | None,
) -> tuple[StatesFn | None, DynamicLoss | None]:
    """The student's own encoder states (None when its encoder is the teacher's, frozen: the
    teacher's states serve both) and, for a dynamic context, its loss; a dynamic run's dev
    clips are ordered by length (length buckets; evaluation keeps the order)."""
    if cfg.audio_context != DYNAMIC and cfg.freeze_encoder and cfg.init == "teacher":
        return None, None
    own = student_states(
        student.model.encoder,
        states.fe,
        data.paths,
        states.device,
        context=cfg.audio_context,
        multiple_s=cfg.context_multiple_s,
        margin_s=cfg.context_margin_s,
        trainable=not cfg.freeze_encoder,
        cache_dir=cache_dir,
    )
    if not isinstance(own, DynamicStudentStates):
        return own, None
    layer_ids = (getattr(student.config, RECORD, None) or {}).get("layer_ids")
    loss_fn = DynamicLoss(cfg, teacher, states, own, layer_ids)
    data.dev.sort(key=lambda c: data.durations[c.hash])
    return own, loss_fn


def make_trainer(
    cfg: StudentConfig, run: StudentRun, device: Any, accelerator: Any | None, guard: LoopGuard
) -> Trainer:
    loaded, data = run.teacher, run.data
    return Trainer(
        run.student,
        loaded.model,
        loaded.processor,
        cfg,
        data.train,
        data.dev,
        run.teacher_states,
        run.student_states,
        Path(cfg.out_dir),
        run_fingerprint(cfg, data.data_hash, loaded.fingerprint),
        device,
        accelerator,
        loss_fn=run.loss_fn,
        save_fn=save_student,
        guard=guard,
        before_step=run.loss_fn.set_step if run.loss_fn is not None else None,
    )


def student_report(
    cfg: StudentConfig,
    teacher_ref: str,
    run: StudentRun,
    state: TrainState,
    teacher_wer: dict[str, float],
    resumed: bool,
) -> StudentReport:
    """What ``report.json`` holds."""
    from distilflow.models.device import count_parameters

    loaded, data = run.teacher, run.data
    languages = data.clip_languages()  # a packed window counts each of its clips
    return StudentReport(
        teacher=TeacherSummary(
            model=teacher_ref,
            id=loaded.fingerprint,
            dev_wer=teacher_wer,
            dev_wer_mean=macro_mean(teacher_wer),
            parameters=count_parameters(loaded.model),
        ),
        student=StudentSummary(
            decoder_layers_from_teacher=run.layer_ids,
            audio_context=cfg.audio_context,
            parameters=count_parameters(run.student),
            best_step=state.best_step,
            dev_wer=state.best_wer,
            dev_wer_mean=state.best_score,
        ),
        train_clips=sum(languages.values()),
        train_targets=dict(sorted(data.targets.items())),
        dev_clips=len(data.dev),
        train_languages=languages,
        steps=state.step,
        resumed=resumed,
        encoder_states_computed=run.computed,
        history=state.history,
        lineage=Lineage(git_commit(), section_hash(cfg), data.data_hash, loaded.fingerprint),
    )


def publish_model(src: Path, dst: Path) -> None:
    """Copy the best model to its stable path, replacing what was there."""
    if dst.exists():
        shutil.rmtree(dst)
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
