"""The expert stage: one language's experts (or a baseline) trained on top of the student.

Per language, in ``experts.out_dir/<lang>/``: ``experts/<lang>.safetensors`` (the best experts
and gates; for the baselines the fine-tuned weights or the LoRA adapter; a file recording no
experts when no trained step beat the student alone, step 0), ``checkpoints/`` (resumable),
``report.json``. The student's dev split (``student.dev_fraction``, by content hash) is the dev
set here too, so no clip the student or the experts trained on is scored. Each method trains
at its own learning rate with the same loss (``distilflow.experts.schedule``).
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distilflow.atomic import atomic_write_json
from distilflow.config import ExpertsConfig, section_hash
from distilflow.decoding.greedy import EvalClip, evaluate_model
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.experts.loss import ExpertLoss, encoder_frames
from distilflow.experts.report import ExpertsLineage, ExpertsReport, ExpertsSkipped
from distilflow.experts.schedule import gate_noise_at, loop_config, set_training_gates
from distilflow.experts.select import Serving, chosen_serving, seed_step_zero
from distilflow.lineage import git_commit
from distilflow.models.device import pick_device
from distilflow.models.dynamic import audio_context_of, context_margin_of
from distilflow.models.experts import (
    ExpertSpec,
    attach_language,
    expert_parameters,
    expert_path,
    save_experts,
    save_no_experts,
    set_gate_noise,
)
from distilflow.safetensors_io import save_tensors
from distilflow.training.data import load_training_examples
from distilflow.training.l2s import clip_texts
from distilflow.training.loop import Tracker, Trainer, TrainState, seed_training
from distilflow.training.prepare import (
    StudentStates,
    eos_of,
    frozen_states,
    load_frozen_teacher,
    run_data,
    student_states,
    trainable_states,
)
from distilflow.training.states import EncoderStates
from distilflow.training.targets import rule_of

REPORT = "report.json"


def spec_of(cfg: ExpertsConfig) -> ExpertSpec:
    return ExpertSpec(cfg.form, cfg.rank, cfg.encoder, cfg.gate_width, cfg.gate_dropout)


def trains_encoder(cfg: ExpertsConfig) -> bool:
    return cfg.encoder


def prepare_model(student: Any, cfg: ExpertsConfig) -> list[torch.nn.Parameter]:
    """Make the method's parameters trainable (and only them); returns them.

    experts: experts and gates of one language, all else frozen, the gates set up as
    ``cfg`` trains them; finetune: the decoder (and the encoder with ``encoder: true``); lora:
    rank-r adapters on the FFN layers (peft).
    """
    student.requires_grad_(False)
    if cfg.method == "experts":
        attach_language(student, spec_of(cfg))
        set_training_gates(student, cfg)
        params = expert_parameters(student)
        for p in params:
            p.requires_grad_(True)
        return params
    if cfg.method == "finetune":
        student.model.decoder.requires_grad_(True)
        student.model.encoder.requires_grad_(cfg.encoder)
        return [p for p in student.parameters() if p.requires_grad]
    return _inject_lora(student, cfg)


def _inject_lora(student: Any, cfg: ExpertsConfig) -> list[torch.nn.Parameter]:
    from peft import LoraConfig, inject_adapter_in_model

    side = r"(encoder|decoder)" if cfg.encoder else "decoder"
    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.rank,
        lora_dropout=0.0,
        target_modules=rf".*\.{side}\.layers\.\d+\.(fc1|fc2)",
    )
    inject_adapter_in_model(config, student)
    params = []
    for name, p in student.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            params.append(p)
    return params


def trainable_state(model: Any, cfg: ExpertsConfig) -> dict[str, torch.Tensor]:
    """What a baseline saves: the trained tensors only (LoRA adapters or the tuned weights)."""
    return {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


@dataclass
class LanguageRun:
    """Everything one language's training needs, built by ``setup``."""

    language: str
    teacher: Any
    student: Any
    processor: Any
    train: list[Any]
    dev: list[EvalClip]
    teacher_states: EncoderStates
    student_states: StudentStates  # dynamic: on each clip's own length
    durations: dict[str, float]
    texts: dict[str, str]  # reference (else pseudo-label) of each clip: what L2S's text model reads
    base_fingerprint: str
    teacher_fingerprint: str
    data_hash: str
    cache_dir: Path | None = None  # model conversions, encoder states, text embeddings
    train_clips: int = 0  # clips trained on (a packed window counts each of its clips)


def setup(
    cfg: ExpertsConfig,
    language: str,
    student_dir: Path,
    filtered_dir: Path,
    teacher_ref: str,
    dev_fraction: float,
    cache_dir: Path,
) -> LanguageRun | None:
    """Load models and data for one language; None when the language has no training clip."""
    from distilflow.models import load_whisper

    df = load_training_examples(filtered_dir, [language])
    if df.empty:
        return None
    device = pick_device(cfg.device)
    teacher_loaded = load_frozen_teacher(teacher_ref, cache_dir, device)
    teacher = teacher_loaded.model
    base = load_whisper(str(student_dir), cache_dir=cache_dir)
    student = base.model.to(device)  # type: ignore[arg-type]
    data = run_data(df, teacher_loaded, dev_fraction, rule_of(cfg), cache_dir)
    if not data.train:
        return None
    fe = base.processor.feature_extractor
    kind, multiple = audio_context_of(student)
    return LanguageRun(
        language,
        teacher,
        student,
        base.processor,
        data.train,
        data.dev,
        frozen_states(teacher.model.encoder, fe, data.paths, cache_dir, device),
        student_states(
            student.model.encoder,
            fe,
            data.paths,
            device,
            context=kind,
            multiple_s=multiple or 1.0,
            margin_s=context_margin_of(student),
            trainable=False,
            cache_dir=cache_dir,
        ),
        data.durations,
        clip_texts(df, data.windows),
        base.fingerprint,
        teacher_loaded.fingerprint,
        data.data_hash,
        cache_dir,
        sum(data.clip_languages().values()),
    )


def run_fingerprint(cfg: ExpertsConfig, run: LanguageRun) -> str:
    """What a checkpoint must match to be resumed (cadence and progress bar excluded)."""
    skip = ("progress", "eval_every", "save_every", "languages")
    stable = {k: v for k, v in cfg.__dict__.items() if k not in skip}
    key = f"{sorted(stable.items())}|{run.language}|{run.data_hash}|{run.base_fingerprint}"
    return hashlib.sha256(f"{key}|{run.teacher_fingerprint}".encode()).hexdigest()[:16]


def train_language(
    cfg: ExpertsConfig,
    language: str,
    student_dir: Path,
    filtered_dir: Path,
    teacher_ref: str,
    dev_fraction: float,
    cache_dir: Path,
    tracker: Tracker,
    guard: LoopGuard = DEFAULT_GUARD,
) -> ExpertsReport | ExpertsSkipped:
    """Train one language's experts (or baseline); returns and writes the report. Dev
    transcripts are decoded with ``guard``, as evaluation decodes them."""
    seed_training(cfg.seed, cfg.deterministic)
    out = Path(cfg.out_dir) / language
    run = setup(cfg, language, student_dir, filtered_dir, teacher_ref, dev_fraction, cache_dir)
    if run is None:
        return _skipped(out, language, cfg, "no training clips for this language")
    run.teacher_states.warm([*run.durations], cfg.progress)
    base_wer, _ = evaluate_model(
        run.student,
        run.processor,
        run.dev,
        run.student_states,
        cfg.eval_max_new_tokens,
        guard=guard,
    )
    params = prepare_model(run.student, cfg)
    trainer = make_trainer(cfg, run, out, guard)
    resumed = trainer.try_resume()
    if not resumed:  # step 0, the student alone, is a candidate like any trained step
        seed_step_zero(trainer, base_wer, tracker)
    state = trainer.run(tracker)
    best = trainer.best_dir() / f"{language}.safetensors"
    publish(best, expert_path(cfg.out_dir, language))
    serving = chosen_serving(cfg, trainer, state, language, best)
    trained = sum(p.numel() for p in params)
    report = language_report(cfg, run, base_wer, state, resumed, trained, serving)
    report.write(out / REPORT)
    return report


def language_report(
    cfg: ExpertsConfig,
    run: LanguageRun,
    base_wer: dict[str, float],
    state: TrainState,
    resumed: bool,
    trained_parameters: int,
    serving: Serving,
) -> ExpertsReport:
    """What ``<lang>/report.json`` holds, once the best experts are published (``run.student``
    as served: with the chosen experts, or without when the student alone won)."""
    from distilflow.models.device import count_parameters

    student_wer = base_wer.get(run.language, math.nan)
    dev_wer = state.best_wer.get(run.language, math.nan)
    experts = cfg.method == "experts"
    return ExpertsReport(
        language=run.language,
        method=cfg.method,
        form=cfg.form if experts else None,
        gate=cfg.gate if experts else None,
        student_dev_wer=student_wer,
        dev_wer=dev_wer,
        hard_gate_dev_wer=serving.hard_gate_dev_wer,
        soft_gate_dev_wer=serving.soft_gate_dev_wer,
        improved=dev_wer < student_wer,
        serves=serving.serves,
        best_step=state.best_step,
        steps=state.step,
        resumed=resumed,
        train_clips=run.train_clips,
        dev_clips=len(run.dev),
        inference_parameters=count_parameters(run.student),  # base + this language's
        trained_parameters=trained_parameters,
        history=state.history,
        lineage=ExpertsLineage(
            git_commit(),
            section_hash(cfg),
            run.data_hash,
            run.teacher_fingerprint,
            base_model=run.base_fingerprint,
        ),
    )


def make_trainer(
    cfg: ExpertsConfig, run: LanguageRun, out: Path, guard: LoopGuard = DEFAULT_GUARD
) -> Trainer:
    student_states = (
        trainable_states(run.student.model.encoder, run.student_states)
        if trains_encoder(cfg)
        else run.student_states
    )
    loss = ExpertLoss(
        cfg,
        run.teacher,
        run.teacher_states,
        student_states,
        {h: encoder_frames(d) for h, d in run.durations.items()},
        text_alignment(cfg, run) if cfg.l2s_weight > 0 else None,
    )

    def save(model: Any, processor: Any, dst: Path, info: dict[str, Any]) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        target = dst / f"{run.language}.safetensors"
        experts = cfg.method == "experts"
        if info["step"] == 0:  # the student alone: no experts (or baseline weights) to serve
            spec = spec_of(cfg) if experts else None
            save_no_experts(target, run.language, run.base_fingerprint, spec, cfg.method)
        elif experts:
            save_experts(model, target, run.language, spec_of(cfg), run.base_fingerprint)
        else:
            meta = {"language": run.language, "method": cfg.method, "base": run.base_fingerprint}
            save_tensors(target, trainable_state(model, cfg), meta)
        atomic_write_json(dst / "info.json", info)

    def noise(step: int) -> None:  # the soft gate's α ramp (0 for the straight-through gate)
        set_gate_noise(run.student, gate_noise_at(cfg, step))
        if loss.alignment is not None:  # Distill-L2S: the CTC head's warm-up
            loss.alignment.step = step

    return Trainer(
        run.student,
        run.teacher,
        run.processor,
        loop_config(cfg),  # the method's own learning rate
        run.train,
        run.dev,
        run.teacher_states,
        student_states,
        out,
        run_fingerprint(cfg, run),
        run.student_states.device,
        loss_fn=loss,
        save_fn=save,
        before_step=noise,
        guard=guard,
    )


def text_alignment(cfg: ExpertsConfig, run: LanguageRun) -> Any:
    """Distill-L2S on this language's clips (``training/l2s.py``)."""
    from distilflow.training.l2s import make_l2s_loss

    return make_l2s_loss(
        run.student,
        run.processor.tokenizer,
        run.texts,
        cfg.text_model,
        cfg.l2s_warmup_steps,
        cfg.l2s_distance,
        eos_of(run.teacher.generation_config),
        run.cache_dir,
    )


def publish(src: Path, dst: Path) -> None:
    """Copy the best file to its stable path: a temporary file, then an atomic rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _skipped(out: Path, language: str, cfg: ExpertsConfig, reason: str) -> ExpertsSkipped:
    """A language without data: no experts (inference keeps the shared path), a clear report."""
    report = ExpertsSkipped(language, cfg.method, reason)
    report.write(out / REPORT)
    return report
