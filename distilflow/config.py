"""Typed configuration: the only reader of ``params.yaml``.

Every option of every stage is a field of one frozen dataclass below, and nowhere else. Loading is
strict: an unknown key, a missing key or a value of the wrong type stops the run at start with a
:class:`ConfigError` that names the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from distilflow.languages import normalize_language

DEFAULT_PARAMS = Path("params.yaml")

SourceKind = Literal["audiofolder", "commonvoice", "hf", "s3"]
Quantization = Literal["int8", "int8_float32", "int8_float16", "int16", "float16", "float32"]


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
    decoder_layers: int  # teacher decoder layers to keep, maximally spaced (first and last kept)
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
    deterministic: bool = True  # torch's deterministic kernels: a re-run gives the same weights


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
    gate_width: int  # hidden width of each gate network
    gate_dropout: float
    gate_target: float  # the budget: mean gate kept near this (0..1)
    gate_noise: float  # α of sigmoid(G + α·noise), rising linearly from 0 over training
    budget_weight: float  # weight of the gate budget loss
    alpha_ce: float  # weight of cross-entropy on the pseudo-labels
    beta_kd: float  # weight of the distillation term from the teacher (0 = no distillation)
    divergence: Literal["js", "kl"]  # Jensen-Shannon (as published) or KL
    temperature: float
    l2s_weight: float  # λ of the Distill-L2S text-alignment loss (0 = off; needs encoder: true)
    text_model: str  # frozen multilingual text encoder for L2S: hub id or dir ("" = none)
    teacher_logits_mb: float  # memory for the teacher's logits on each example (0 = recompute)
    max_steps: int
    batch_size: int
    grad_accum: int
    lr: float
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
    judges): the repetition guard (distilflow/decoding/loop_guard.py)."""

    loop_repeats: int = 3  # end a transcript whose tail repeats one unit this often (0 = off)
    loop_min_tokens: int = 12  # ... and only when the repeats span at least this many tokens


@dataclass(frozen=True)
class RetrainConfig:
    """Scheduled and triggered retraining: the inbox watcher and the parent ``retrain`` flow."""

    inbox: str  # watched for new audio: a folder or s3://bucket/prefix; must be an ingest source
    state_file: str  # content hashes already handed to a retrain run (JSON, written atomically)
    concurrency_limit: str  # Prefect global concurrency limit (1 slot): never two retrains at once
    lock_timeout_s: float  # how long a retrain waits for the running one before it gives up
    full_stages: list[str]  # stages a full run reproduces (dvc repro targets); [] = every stage


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


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: Path) -> Any:
    """Check ``value`` against the annotation ``tp``, building nested dataclasses."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {allowed}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)  # type: ignore[arg-type]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: {key}: expected {tp.__name__}, got bool {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(
            f"{source}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _build(cls: type[T], data: Any, key: str, source: Path) -> T:
    """Build dataclass ``cls`` from a mapping, strictly."""
    where = key or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = ", ".join(f"{key}.{u}" if key else u for u in unknown)
        raise ConfigError(f"{source}: unknown key {dotted}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        dotted = f"{key}.{name}" if key else name
        if name not in data:
            has_default = f.default is not dataclasses.MISSING
            if has_default or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"{source}: missing key {dotted}")
        kwargs[name] = _convert(data[name], hints[name], dotted, source)
    return cls(**kwargs)


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate ``params.yaml``."""
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    raw = raw if raw is not None else {}
    _refuse_renamed(raw, source)
    params = _build(Params, raw, "", source)
    _check(params, source)
    return params


RENAMED_SECTIONS = {"teacher": "label", "registry": "register"}  # old name -> the stage's name


def _refuse_renamed(raw: Any, source: Path) -> None:
    """A params file written before the sections took their stages' names fails, saying how."""
    if not isinstance(raw, dict):
        return
    for old, new in RENAMED_SECTIONS.items():
        if old in raw:
            raise ConfigError(
                f"{source}: section {old!r} is now {new!r} (named as its stage is in dvc.yaml, "
                f"flows/ and tasks/): rename {old}: to {new}:"
            )


def _check(params: Params, source: Path) -> None:
    """Cross-field rules that types alone cannot express."""
    ing = params.ingest
    if not 0 < ing.max_duration_s <= 30 * 60:
        raise ConfigError(
            f"{source}: ingest.max_duration_s: must be in (0, 1800], got {ing.max_duration_s}"
        )
    if not 0 <= ing.min_duration_s < ing.max_duration_s:
        raise ConfigError(
            f"{source}: ingest.min_duration_s: must be >= 0 and below ingest.max_duration_s"
        )
    if not ing.sources:
        raise ConfigError(f"{source}: ingest.sources: at least one source is needed")
    t = params.label
    for name in ("batch_size", "shard_size", "max_new_tokens", "num_beams"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{source}: label.{name}: must be at least 1")
    st = params.student
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every", "processes"):
        if getattr(st, name) < 1:
            raise ConfigError(f"{source}: student.{name}: must be at least 1")
    if not 0 < st.dev_fraction < 1:
        raise ConfigError(f"{source}: student.dev_fraction: must be in (0, 1)")
    if st.cache_encoder and not st.freeze_encoder and st.audio_context == "padded":
        # a dynamic student never reads the cache: it caches only the padded teacher's states
        raise ConfigError(f"{source}: student.cache_encoder: needs student.freeze_encoder: true")
    step = st.context_multiple_s * 100  # log-mel frames; the encoder halves them
    if not (step >= 2 and abs(step - round(step)) < 1e-6 and round(step) % 2 == 0):
        raise ConfigError(
            f"{source}: student.context_multiple_s: must be a positive multiple of 0.02 s, "
            f"got {st.context_multiple_s}"
        )
    if not st.encoder_mse >= 0:
        raise ConfigError(f"{source}: student.encoder_mse: must be >= 0")
    _check_experts(params.experts, source)
    _check_evaluate(params.evaluate, source)
    _check_export(params.export, source)
    _check_retrain(params, source)
    d = params.decode
    if d.loop_repeats == 1 or d.loop_repeats < 0 or d.loop_min_tokens < 1:
        raise ConfigError(
            f"{source}: decode: loop_repeats must be 0 (off) or >= 2, loop_min_tokens >= 1"
        )
    if not params.register.tolerance >= 0:
        raise ConfigError(f"{source}: register.tolerance: must be >= 0 (an absolute WER)")
    f = params.filter
    for name in ("normalizer", "max_error"):
        if "default" not in getattr(f, name):
            raise ConfigError(f"{source}: filter.{name}: needs a 'default' entry")


def _check_experts(ex: ExpertsConfig, source: Path) -> None:
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every", "rank"):
        if getattr(ex, name) < 1:
            raise ConfigError(f"{source}: experts.{name}: must be at least 1")
    if not 0.0 <= ex.gate_target <= 1.0:
        raise ConfigError(f"{source}: experts.gate_target: must be in [0, 1]")
    if ex.l2s_weight > 0 and not (ex.encoder and ex.text_model):
        raise ConfigError(
            f"{source}: experts.l2s_weight: the text-alignment loss trains the encoder; it needs "
            "experts.encoder: true and a experts.text_model"
        )
    if len(set(ex.languages)) != len(ex.languages):
        raise ConfigError(f"{source}: experts.languages: a language is listed twice")


def _check_evaluate(ev: EvaluateConfig, source: Path) -> None:
    if not ev.models or len(set(ev.models)) != len(ev.models):
        raise ConfigError(f"{source}: evaluate.models: at least one model, none listed twice")
    if ev.max_new_tokens < 1:
        raise ConfigError(f"{source}: evaluate.max_new_tokens: must be at least 1")
    if ev.max_clips_per_language is not None and ev.max_clips_per_language < 1:
        raise ConfigError(f"{source}: evaluate.max_clips_per_language: must be >= 1 or null")
    if not ev.languages or len(set(ev.languages)) != len(ev.languages):
        raise ConfigError(f"{source}: evaluate.languages: at least one language, none twice")
    odd = [lang for lang in ev.languages if normalize_language(lang) != lang]
    if odd:
        raise ConfigError(
            f"{source}: evaluate.languages: {odd} are not Whisper language codes (e.g. en, fr)"
        )
    if "dev" in ev.extra_sets:
        raise ConfigError(f"{source}: evaluate.extra_sets: 'dev' is the student's dev split")


def _check_export(ex: ExportConfig, source: Path) -> None:
    if ex.verify_clips < 0 or ex.max_new_tokens < 1:
        raise ConfigError(f"{source}: export: verify_clips must be >= 0, max_new_tokens >= 1")
    if not ex.max_wer_vs_torch >= 0:
        raise ConfigError(f"{source}: export.max_wer_vs_torch: must be >= 0")
    if not 0 <= ex.max_loop_share <= 1:
        raise ConfigError(f"{source}: export.max_loop_share: must be in [0, 1]")


def _check_retrain(params: Params, source: Path) -> None:
    if not params.retrain.lock_timeout_s > 0:
        raise ConfigError(f"{source}: retrain.lock_timeout_s: must be > 0 (seconds)")


def inbox_source(params: Params) -> SourceConfig:
    """The ingest source that is the watched inbox; ConfigError when none is."""
    inbox = params.retrain.inbox
    for s in params.ingest.sources:
        if _same_place(s.uri, inbox):
            return s
    raise ConfigError(
        f"retrain.inbox: {inbox!r} is not one of ingest.sources; add it there "
        "(e.g. {kind: audiofolder, uri: inbox}) so that what the watcher sees gets ingested"
    )


def _same_place(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return Path(a) == Path(b)


def section_hash(section: object) -> str:
    """A stable short hash of one config section (lineage of the artifacts it produced)."""
    payload = json.dumps(dataclasses.asdict(section), sort_keys=True, default=str)  # type: ignore[call-overload]
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
