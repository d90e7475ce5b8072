"""Cross-field rules of ``params.yaml`` that types alone cannot express.

:func:`check` runs once the sections are built (:func:`distilflow.config.load.load_params`) and
raises :class:`ConfigError` on the first rule broken, in the order of the sections below.
:func:`inbox_source` is the one rule checked where it is needed (the retrain watcher).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from distilflow.config.sections import (
    ConfigError,
    EvaluateConfig,
    ExpertsConfig,
    ExportConfig,
    IngestConfig,
    Params,
    SourceConfig,
    StudentConfig,
)
from distilflow.languages import normalize_language


def check(params: Params, source: Path) -> None:
    """Cross-field rules that types alone cannot express."""
    _check_ingest(params.ingest, source)
    t = params.label
    for name in ("batch_size", "shard_size", "max_new_tokens", "num_beams"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{source}: label.{name}: must be at least 1")
    _check_student(params.student, source)
    for section in ("student", "experts"):
        training = getattr(params, section)
        share = training.timestamp_share
        if not 0 <= share <= 1:
            raise ConfigError(f"{source}: {section}.timestamp_share: must be in [0, 1]")
        if not 0 <= training.timestamp_window_s <= 30:
            raise ConfigError(
                f"{source}: {section}.timestamp_window_s: must be in [0, 30] (Whisper's window; "
                "0 trains each clip alone)"
            )
        if training.timestamp_gap_s < 0:
            raise ConfigError(f"{source}: {section}.timestamp_gap_s: must be >= 0")
        if share > 0 and not t.timestamps:
            raise ConfigError(
                f"{source}: {section}.timestamp_share: {share} needs label.timestamps: true "
                "(the teacher's labels carry the timestamps the student learns)"
            )
    _check_experts(params.experts, source)
    _check_evaluate(params.evaluate, source)
    _check_export(params.export, source)
    _check_retrain(params, source)
    _check_runner(params, source)
    d = params.decode
    if d.loop_repeats == 1 or d.loop_repeats < 0 or d.loop_min_tokens < 1:
        raise ConfigError(
            f"{source}: decode: loop_repeats must be 0 (off) or >= 2, loop_min_tokens >= 1"
        )
    problem = longform_problem(
        d.temperatures, d.compression_ratio_threshold, d.logprob_threshold, d.no_speech_threshold
    )
    if problem:
        raise ConfigError(f"{source}: decode: {problem}")
    if not params.register.tolerance >= 0:
        raise ConfigError(f"{source}: register.tolerance: must be >= 0 (an absolute WER)")
    f = params.filter
    for name in ("normalizer", "max_error"):
        if "default" not in getattr(f, name):
            raise ConfigError(f"{source}: filter.{name}: needs a 'default' entry")


def _check_ingest(ing: IngestConfig, source: Path) -> None:
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


def _check_student(st: StudentConfig, source: Path) -> None:
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every", "processes"):
        if getattr(st, name) < 1:
            raise ConfigError(f"{source}: student.{name}: must be at least 1")
    if not 0 < st.dev_fraction < 1:
        raise ConfigError(f"{source}: student.dev_fraction: must be in (0, 1)")
    trains_dynamic_encoder = st.audio_context == "dynamic" and not st.freeze_encoder
    if st.l2s_weight > 0 and not (trains_dynamic_encoder and st.text_model):
        raise ConfigError(
            f"{source}: student.l2s_weight: the text-alignment loss trains the encoder; it needs "
            "student.audio_context: dynamic, student.freeze_encoder: false and a "
            "student.text_model"
        )
    if st.l2s_warmup_steps < 0:
        raise ConfigError(f"{source}: student.l2s_warmup_steps: must be >= 0")
    if st.cache_encoder and not st.freeze_encoder and st.audio_context == "padded":
        # a dynamic student never reads the cache: it caches only the padded teacher's states
        raise ConfigError(f"{source}: student.cache_encoder: needs student.freeze_encoder: true")
    # log-mel frames (100 a second: distilflow.audio.FRAMES_PER_SECOND, not imported so that
    # reading params.yaml needs neither the audio stack nor audio.py); the encoder halves them
    step = st.context_multiple_s * 100
    if not (step >= 2 and abs(step - round(step)) < 1e-6 and round(step) % 2 == 0):
        raise ConfigError(
            f"{source}: student.context_multiple_s: must be a positive multiple of 0.02 s, "
            f"got {st.context_multiple_s}"
        )
    for name in ("encoder_mse", "decoder_mse", "context_margin_s"):
        if not getattr(st, name) >= 0:
            raise ConfigError(f"{source}: student.{name}: must be >= 0")
    if st.decoder_layers == 0 or st.decoder_layers < -1:
        raise ConfigError(
            f"{source}: student.decoder_layers: -1 (every teacher layer) or a count >= 1, "
            f"got {st.decoder_layers}"
        )
    if st.encoder_top_layers < -1:
        raise ConfigError(f"{source}: student.encoder_top_layers: -1 (all) or a count >= 0")
    if st.freeze_decoder and st.freeze_encoder:
        raise ConfigError(
            f"{source}: student.freeze_decoder: with freeze_encoder true nothing would train"
        )


def _check_experts(ex: ExpertsConfig, source: Path) -> None:
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every", "rank"):
        if getattr(ex, name) < 1:
            raise ConfigError(f"{source}: experts.{name}: must be at least 1")
    if not 0.0 <= ex.gate_target <= 1.0:
        raise ConfigError(f"{source}: experts.gate_target: must be in [0, 1]")
    for name in ("lr", "finetune_lr", "lora_lr"):
        if not getattr(ex, name) > 0:
            raise ConfigError(f"{source}: experts.{name}: must be above 0")
    if not 0.0 <= ex.expert_dropout < 1.0:
        raise ConfigError(f"{source}: experts.expert_dropout: must be in [0, 1)")
    if ex.gate_noise < 0 or ex.gate_noise_steps < 0:
        raise ConfigError(f"{source}: experts.gate_noise and gate_noise_steps: must be >= 0")
    if ex.gate == "soft" and ex.gate_noise_steps > ex.max_steps:
        raise ConfigError(
            f"{source}: experts.gate_noise_steps: {ex.gate_noise_steps} is beyond max_steps "
            f"({ex.max_steps}): the soft gate's noise would never reach gate_noise, and the gates "
            "would end away from the 0/1 served (0 = ramp over the whole run)"
        )
    if ex.l2s_weight > 0 and not (ex.encoder and ex.text_model):
        raise ConfigError(
            f"{source}: experts.l2s_weight: the text-alignment loss trains the encoder; it needs "
            "experts.encoder: true and a experts.text_model"
        )
    if ex.l2s_warmup_steps < 0:
        raise ConfigError(f"{source}: experts.l2s_warmup_steps: must be >= 0")
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


def _check_runner(params: Params, source: Path) -> None:
    run = params.runner
    if run.workers < 1:
        raise ConfigError(f"{source}: runner.workers: must be >= 1")
    if run.address and run.kind == "threads":
        raise ConfigError(f"{source}: runner.address: set for kind threads (dask or ray only)")


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


def longform_problem(
    temperatures: Sequence[float],
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
) -> str | None:
    """What is wrong with long-form decoding options (``decode``), or None. Pure.

    Shared by params.yaml and a model directory's ``distilflow_decode.json``.
    """
    temps = list(temperatures)
    if not temps or any(not 0 <= t <= 2 for t in temps):
        return f"temperatures must be a non-empty list of values in [0, 2], got {temps}"
    if temps != sorted(temps) or len(set(temps)) != len(temps):
        return f"temperatures must rise (the fallback tries them in order), got {temps}"
    if compression_ratio_threshold is not None and not compression_ratio_threshold > 0:
        return f"compression_ratio_threshold must be > 0 or null, got {compression_ratio_threshold}"
    if logprob_threshold is not None and not logprob_threshold <= 0:
        return f"logprob_threshold must be <= 0 or null, got {logprob_threshold}"
    if no_speech_threshold is not None and not 0 < no_speech_threshold <= 1:
        return f"no_speech_threshold must be in (0, 1] or null, got {no_speech_threshold}"
    return None
