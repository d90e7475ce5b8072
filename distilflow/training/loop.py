"""The distillation training loop: one visible loop, resumable exactly.

Each optimiser step: sample a language-balanced batch, take the encoder states (cached on disk
when the encoder is frozen and the teacher's), run the teacher's decoder teacher-forced on the
pseudo-labels under no_grad, run the student's decoder, and minimise
α·CE(labels) + β·T²·KL(teacher ‖ student) on the real tokens. Every ``eval_every`` steps the
student transcribes the dev split; the best (lowest mean WER over languages) is kept.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from distilflow.atomic import atomic_write_json
from distilflow.config import StudentConfig
from distilflow.decoding.greedy import EvalClip, evaluate_model, macro_mean
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.models.convert import atomic_dir
from distilflow.progress import progress
from distilflow.training.data import BalancedSampler, collate
from distilflow.training.losses import distillation_loss
from distilflow.training.teacher_logits import TeacherLogits

StatesFn = Callable[[list[str]], torch.Tensor]  # clip hashes -> encoder states (B, frames, d)
Batch = dict[str, Any]  # collated tensors on the device, plus ``hash`` and ``language`` lists
LossFn = Callable[[Any, Batch], tuple[torch.Tensor, dict[str, float]]]  # (model, batch)
SaveFn = Callable[[Any, Any, Path, dict[str, Any]], object]  # (model, processor, dst, info)


class LoopConfig(Protocol):
    """The options the loop reads (``StudentConfig`` and ``ExpertsConfig`` both carry them)."""

    @property
    def max_steps(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def grad_accum(self) -> int: ...

    @property
    def lr(self) -> float: ...

    @property
    def warmup_steps(self) -> int: ...

    @property
    def lr_schedule(self) -> str: ...

    @property
    def weight_decay(self) -> float: ...

    @property
    def max_grad_norm(self) -> float: ...

    @property
    def eval_every(self) -> int: ...

    @property
    def eval_max_new_tokens(self) -> int: ...

    @property
    def save_every(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def progress(self) -> bool: ...


class Tracker(Protocol):
    """Where metrics go (MLflow in the pipeline, nothing in tests)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None


@dataclass(frozen=True)
class TrainExample:
    """One training clip: its decoder sequence (prompt + pseudo-label) and language."""

    hash: str
    language: str
    decoder_input_ids: list[int]
    labels: list[int]


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs."""

    fingerprint: str  # config + data + teacher: a checkpoint of another run is never resumed
    step: int = 0
    best_score: float = math.inf
    best_step: int = -1
    best_wer: dict[str, float] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def seed_training(seed: int, deterministic: bool) -> None:
    """Seed torch and Python's ``random``; with ``deterministic``, also take torch's
    deterministic kernels, so a run from scratch gives bit-identical weights (and checkpoints)
    on the same machine and thread count.

    On 2 CPU threads the backward of the decoder's positional-embedding gather otherwise sums
    in a varying order: two runs of the demo's 150 student steps ended up to 2.4e-6 apart (same
    transcripts). Ops without a deterministic kernel warn instead of failing. Process-wide, as
    torch's switch is.
    """
    torch.manual_seed(seed)
    random.seed(seed)  # for any code that draws from it; the checkpoints do not keep its state
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def lr_factor(step: int, warmup: int, total: int, schedule: str = "linear") -> float:
    """Linear warm-up to 1, then 1 (``constant``) or a linear decay to 0 at ``total``. Pure."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule != "linear":
        raise ValueError(f"unknown LR schedule {schedule!r} (constant | linear)")
    return max(0.0, (total - step) / max(1, total - warmup))


NO_DECAY = ("bias", "norm", "embed")  # parameter names AdamW never decays: biases, layer norms
# (``layer_norm``, ``final_layer_norm``) and embeddings (``embed_tokens``, ``embed_positions``)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters in two AdamW groups: decayed, and never decayed (biases, norms,
    embeddings: decaying them pulls scales and token vectors to 0). Empty groups are left out."""
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if any(k in name for k in NO_DECAY) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def trained_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters being trained, by name: all a checkpoint needs, since the frozen rest is
    rebuilt identically by the run that resumes (the experts' checkpoint is 1 MB, not the
    student's 220 MB)."""
    return {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_trained(model: torch.nn.Module, path: Path) -> None:
    """Copy a checkpoint's tensors into ``model``; they must be exactly its trained parameters."""
    saved = load_file(str(path))  # safetensors: no pickle
    params = dict(model.named_parameters())
    trained = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != trained:
        diff = sorted(set(saved) ^ trained)[:5]
        raise ValueError(f"{path}: not a checkpoint of these trained parameters (differ: {diff})")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)


def step_loss(
    student: Any,
    teacher_logits: TeacherLogits,
    batch: dict[str, Any],
    student_states: torch.Tensor,
    cfg: StudentConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss of one micro-batch (bf16 autocast on a GPU; losses in fp32)."""
    inputs = {
        "decoder_input_ids": batch["decoder_input_ids"],
        "decoder_attention_mask": batch["decoder_attention_mask"],
    }
    teacher_out = teacher_logits(batch["hash"], **inputs)
    device = student_states.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        student_logits = student(encoder_outputs=(student_states,), **inputs).logits
    return distillation_loss(
        student_logits, teacher_out, batch["labels"], cfg.alpha_ce, cfg.beta_kd, cfg.temperature
    )


class Trainer:
    """Holds the models, data and optimiser of one distillation run."""

    def __init__(
        self,
        student: Any,
        teacher: Any,
        processor: Any,
        cfg: LoopConfig,
        train: list[TrainExample],
        dev: list[EvalClip],
        states: StatesFn,
        student_states: StatesFn | None,
        out_dir: Path,
        fingerprint: str,
        device: torch.device,
        accelerator: Any | None = None,
        *,
        loss_fn: LossFn | None = None,
        save_fn: SaveFn,
        before_step: Callable[[int], None] | None = None,
        guard: LoopGuard = DEFAULT_GUARD,
    ) -> None:
        """The default loss is the student's distillation loss (``step_loss``); ``save_fn``
        writes the best model (the student stage's ``save_student``, the experts' files), and
        ``before_step(step)`` runs before each optimiser step (e.g. a gate-noise schedule)."""
        self.student, self.teacher, self.processor, self.cfg = student, teacher, processor, cfg
        self.guard = guard  # dev transcripts are decoded as they will be served
        self.train_set, self.dev, self.out = train, dev, out_dir
        self.teacher_states = states  # frozen teacher encoder (cached when possible)
        self.teacher_logits: TeacherLogits | None = None  # the default loss's, made on first use
        self.student_states = student_states or states  # differs only with a trainable encoder
        self.device = device
        self.loss_fn: LossFn = loss_fn or self._distillation_loss
        self.save_fn = save_fn
        self.before_step = before_step
        self.pad_id = int(processor.tokenizer.pad_token_id or processor.tokenizer.eos_token_id)
        # One process by default; under `accelerate launch` every rank runs this same loop on
        # its own batches and DDP averages the gradients.
        from accelerate import Accelerator

        self.acc = accelerator or Accelerator(cpu=device.type == "cpu")
        self.params = [p for p in student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(param_groups(student, cfg.weight_decay), lr=cfg.lr)
        # the schedule steps once per optimiser step (a prepared scheduler would step per rank)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.max_steps, cfg.lr_schedule)
        )
        self.model, self.optimizer = self.acc.prepare(student, optimizer)
        self.is_main = bool(self.acc.is_main_process)
        seed = cfg.seed + int(self.acc.process_index)  # each rank draws its own batches
        temperature = float(getattr(cfg, "language_temperature", 1.0))
        self.sampler = BalancedSampler([e.language for e in train], temperature, seed)
        self.state = TrainState(fingerprint)

    def _distillation_loss(self, model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg: Any = self.cfg  # a StudentConfig: the default loss is the student's
        if self.teacher_logits is None:
            budget = cfg.teacher_logits_mb
            self.teacher_logits = TeacherLogits(self.teacher, self.teacher_states, budget)
        student_states = self.student_states(batch["hash"])
        return step_loss(model, self.teacher_logits, batch, student_states, cfg)

    # -- checkpoints -------------------------------------------------------------------------
    def _publish(self, kind: str, write: Callable[[Path], None], meta: dict[str, Any]) -> Path:
        """Write ``kind/step-N`` atomically, then point ``kind/latest.json`` at it, then prune.

        At every moment the pointer names a complete directory: a kill at any point is safe.
        """
        root = self.out / kind
        name = f"step-{self.state.step:07d}"
        if not (root / name).exists():
            with atomic_dir(root / name) as tmp:
                write(tmp)
        atomic_write_json(root / "latest.json", {"dir": name, **meta})
        for old in root.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return root / name

    def save_checkpoint(self) -> None:
        """Model, optimiser, schedule, RNG and data position."""
        self.state.sampler = self.sampler.state_dict()

        def write(tmp: Path) -> None:
            save_file(trained_tensors(self.student), str(tmp / "model.safetensors"))
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    # not Python's global RNG: training never draws from it (the sampler has its
                    # own), while Prefect's polling jitter in this process does, as timing goes
                },
                tmp / "trainer.pt",
            )
            (tmp / "state.json").write_text(json.dumps(asdict(self.state)), encoding="utf-8")

        if self.is_main:  # one writer; every rank waits so none runs ahead of a checkpoint
            self._publish("checkpoints", write, {"step": self.state.step})
        self.acc.wait_for_everyone()

    def try_resume(self) -> bool:
        """Continue from the last checkpoint of the same run; False when there is none."""
        pointer = self.out / "checkpoints" / "latest.json"
        if not pointer.exists():
            return False
        ckpt = self.out / "checkpoints" / json.loads(pointer.read_text(encoding="utf-8"))["dir"]
        saved = TrainState(**json.loads((ckpt / "state.json").read_text(encoding="utf-8")))
        if saved.fingerprint != self.state.fingerprint:
            return False  # another config or data: start afresh
        load_trained(self.student, ckpt / "model.safetensors")
        blob = torch.load(ckpt / "trainer.pt", weights_only=True)  # never arbitrary pickles
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["torch_rng"])
        self.sampler.load_state_dict(saved.sampler)
        self.state = saved
        return True

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        self.student.eval()
        with torch.no_grad():
            wer, _ = evaluate_model(
                self.student,
                self.processor,
                self.dev,
                self.student_states,
                self.cfg.eval_max_new_tokens,
                guard=self.guard,
            )
        self.student.train()
        return wer

    def save_best(self, wer: dict[str, float]) -> None:
        self.state.best_score, self.state.best_step = macro_mean(wer), self.state.step
        self.state.best_wer = wer
        info = {"step": self.state.step, "dev_wer": wer, "fingerprint": self.state.fingerprint}

        def write(tmp: Path) -> None:
            self.save_fn(self.student, self.processor, tmp / "model", info)

        self._publish("best", write, info)

    def best_dir(self) -> Path:
        """The best model's directory (a transformers directory, safetensors)."""
        pointer = json.loads((self.out / "best" / "latest.json").read_text(encoding="utf-8"))
        return self.out / "best" / str(pointer["dir"]) / "model"

    # -- the loop ----------------------------------------------------------------------------
    def batch(self, indices: list[int]) -> dict[str, Any]:
        examples = [asdict(self.train_set[i]) for i in indices]
        tensors = collate(examples, self.pad_id)
        return {
            k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()
        }

    def run(self, tracker: Tracker) -> TrainState:
        cfg = self.cfg
        self.student.train()
        bar = progress(
            cfg.max_steps,
            "distil",
            unit="step",
            initial=self.state.step,
            enabled=cfg.progress and self.is_main,
        )
        while self.state.step < cfg.max_steps:
            # 1. one optimiser step over grad_accum language-balanced micro-batches
            if self.before_step is not None:
                self.before_step(self.state.step)
            self.optimizer.zero_grad(set_to_none=True)
            parts: dict[str, float] = {}
            for _ in range(cfg.grad_accum):
                batch = self.batch([next(self.sampler) for _ in range(cfg.batch_size)])
                loss, parts = self.loss_fn(self.model, batch)
                self.acc.backward(loss / cfg.grad_accum)
            grad_norm = float(self.acc.clip_grad_norm_(self.params, cfg.max_grad_norm))
            self.optimizer.step()
            self.scheduler.step()
            self.state.step += 1
            # 2. log
            metrics = {
                **{f"train/{k}": v for k, v in parts.items()},
                "train/grad_norm": grad_norm,
                "train/lr": float(self.scheduler.get_last_lr()[0]),
            }
            if self.is_main:
                tracker.log_metrics(metrics, self.state.step)
            bar.set_postfix(loss=f"{parts.get('loss', float('nan')):.3f}")
            bar.update(1)
            # 3. evaluate on the dev split; keep the best
            due = self.state.step % cfg.eval_every == 0 or self.state.step == cfg.max_steps
            if due and self.is_main:  # the main process evaluates and keeps the best
                wer = self.evaluate()
                tracker.log_metrics(
                    {f"dev/wer_{k}": v for k, v in wer.items()} | {"dev/wer_mean": macro_mean(wer)},
                    self.state.step,
                )
                self.state.history.append({"step": self.state.step, **wer})
                if macro_mean(wer) < self.state.best_score or self.state.best_step < 0:
                    self.save_best(wer)
            # 4. checkpoint for an exact resume
            if self.state.step % cfg.save_every == 0 or self.state.step == cfg.max_steps:
                self.save_checkpoint()
        bar.close()
        if self.is_main:
            atomic_write_json(self.out / "train_state.json", asdict(self.state))
        self.acc.wait_for_everyone()
        return self.state
