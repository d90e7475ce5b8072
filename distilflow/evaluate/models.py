"""Models under evaluation, timed greedy transcription from audio, and peak memory.

A model is an :class:`EvalModel`: a name, a loader and a ``prepare(model, language)`` hook
called before each language's clips are decoded (the identity by default).

Speed is measured end to end from the waveform at batch 1: Whisper's log-mel front end, the
encoder and greedy decoding of one clip, timed with ``time.perf_counter`` (the audio file's
decoding is not timed). One untimed warm-up decode per model and set comes first.
``rtf = decode seconds / audio seconds``; ``tokens_per_s = generated text tokens / decode
seconds`` (the forced prompt and ``<|endoftext|>`` are not counted).

Each clip also records how its transcript ended (``ClipResult.stop``): ``end`` (the model
ended it), ``loop_guard`` (the repetition guard stopped a loop and cut its repeats) or
``max_new_tokens`` (it ran into the token budget). The last two are the evaluation's loops.

Peak memory is measured in a fresh, spawned process (nothing another model left behind, in
the allocator or elsewhere, can hide or inflate it): after the imports, the process loads the
model, prepares it for one clip's language and decodes that clip. On CPU the figure is the peak
resident set during that work minus the resident set just before it: weights (file pages of the
safetensors read included), activations and caches. On Linux the kernel's high-water mark is
reset first (``/proc/self/clear_refs``, value 5) and read back as ``VmHWM``; elsewhere the growth
of ``ru_maxrss`` is used, which understates when the imports peaked higher. On CUDA the figure
is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from distilflow.audio import SAMPLE_RATE
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.decoding.speculative import greedy_generate
from distilflow.evaluate.sets import AudioClip, read_clip_audio
from distilflow.models.device import pick_device
from distilflow.models.dynamic import fit_features
from distilflow.models.load import LoadedWhisper, load_whisper

Prepare = Callable[[Any, str], Any]


def keep_model(model: Any, language: str) -> Any:
    """The default ``prepare``: the model as loaded, whatever the language."""
    del language
    return model


@dataclass(frozen=True)
class EvalModel:
    """One model to evaluate.

    Per-language experts plug in through ``load`` and ``prepare`` without changing this
    module: ``load`` returns the student with its expert slots added, and ``prepare`` routes it
    for the language about to be decoded, e.g. a module-level function calling
    ``distilflow.models.experts.use_language(model, experts_dir, language)`` and returning the
    model,
    bound with ``functools.partial``. Both must pickle (module-level functions or partials of
    them): peak memory is measured in a spawned process.
    """

    name: str  # the name in metrics.json and the report (teacher, student, ...)
    ref: str  # what it is loaded from (a model reference or directory), for the report
    load: Callable[[], LoadedWhisper]  # model (eval mode), processor, weights fingerprint
    language: str | None = None  # a model for one language only; None: every language
    prepare: Prepare = keep_model  # called as prepare(model, language) before each language


def whisper_model(name: str, ref: str, cache_dir: Path | None) -> EvalModel:
    """A plain Whisper loaded with ``load_whisper`` (any reference it accepts)."""
    return EvalModel(name, ref, partial(load_whisper, ref, cache_dir))


def standard_models(
    names: Sequence[str],
    teacher_ref: str,
    student_dir: Path,
    cache_dir: Path | None,
    experts_dir: Path | None = None,
) -> list[EvalModel]:
    """``teacher`` (``label.model``), ``student`` (``student.out_dir/model``) and ``experts``
    (the student routed to each language's experts from ``experts.out_dir``), by name."""
    from distilflow.models.experts import route_to_stage_experts

    known = {
        "teacher": lambda: whisper_model("teacher", teacher_ref, cache_dir),
        "student": lambda: whisper_model("student", str(student_dir), cache_dir),
        "experts": lambda: EvalModel(
            "experts",
            f"{student_dir} + {experts_dir}/<lang>",
            partial(load_whisper, str(student_dir), cache_dir),
            prepare=partial(route_to_stage_experts, Path(experts_dir or "")),
        ),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"evaluate.models: unknown {unknown}; known: {sorted(known)}")
    if {"student", "experts"} & set(names) and not (student_dir / "config.json").is_file():
        raise FileNotFoundError(f"student: {student_dir} holds no model: run the student stage")
    return [known[n]() for n in names]


# How a transcript ended (``ClipResult.stop``): the model ended it, the repetition guard cut a
# loop, or it ran into the token budget. The last two are the evaluation's "loops".
END, LOOP_GUARD, TOKEN_BUDGET = "end", "loop_guard", "max_new_tokens"
LOOP_STOPS = frozenset({LOOP_GUARD, TOKEN_BUDGET})


@dataclass(frozen=True)
class ClipResult:
    """One clip's transcript and timing."""

    id: str
    language: str
    reference: str
    hypothesis: str
    audio_s: float  # clip duration
    decode_s: float  # log-mel + encoder + greedy decode
    tokens: int  # generated text tokens (after the guard's cut)
    stop: str = END  # END | LOOP_GUARD | TOKEN_BUDGET

    @property
    def looped(self) -> bool:
        """The guard cut the transcript or it ran into the token budget."""
        return self.stop in LOOP_STOPS


@dataclass(frozen=True)
class _UntrimmedGuard(LoopGuard):
    """The guard's early stop without its cut, so that the caller sees whether it cut."""

    def trim(self, tokens: Sequence[int]) -> list[int]:
        return list(tokens)


def stop_of(raw: Sequence[int], kept: Sequence[int], max_new_tokens: int) -> str:
    """How a transcript ended, from its text tokens before (``raw``) and after the guard's cut.
    Pure."""
    if len(kept) < len(raw):
        return LOOP_GUARD
    return TOKEN_BUDGET if len(raw) >= max_new_tokens else END


def load_on(model: EvalModel, device: str) -> tuple[Any, Any, str]:
    """(model on ``device`` in eval mode, processor, fingerprint)."""
    loaded = model.load()
    net = loaded.model.to(pick_device(device))  # type: ignore[arg-type]
    net.eval()
    return net, loaded.processor, loaded.fingerprint


def decode_clip(
    model: Any,
    processor: Any,
    audio: Any,
    language: str,
    max_new_tokens: int,
    guard: LoopGuard = DEFAULT_GUARD,
) -> tuple[list[int], float]:
    """Greedy text tokens of one clip from its samples, and the seconds it took."""
    tokens, seconds, _ = decode_clip_stop(model, processor, audio, language, max_new_tokens, guard)
    return tokens, seconds


def decode_clip_stop(
    model: Any,
    processor: Any,
    audio: Any,
    language: str,
    max_new_tokens: int,
    guard: LoopGuard = DEFAULT_GUARD,
) -> tuple[list[int], float, str]:
    """``decode_clip`` and how the transcript ended (``stop_of``)."""
    start = time.perf_counter()
    features = processor.feature_extractor(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    features = fit_features(model, features, [len(audio)])  # a dynamic student: the clip's length
    untrimmed = _UntrimmedGuard(guard.min_repeats, guard.min_tokens, guard.max_unit)
    raw = greedy_generate(model, features, language, max_new_tokens, untrimmed)  # .tolist() syncs
    tokens = guard.trim(raw)
    return tokens, time.perf_counter() - start, stop_of(raw, tokens, max_new_tokens)


@torch.inference_mode()
def transcribe_clips(
    eval_model: EvalModel,
    model: Any,
    processor: Any,
    set_name: str,
    clips: Sequence[AudioClip],
    max_new_tokens: int,
    guard: LoopGuard = DEFAULT_GUARD,
) -> list[ClipResult]:
    """Greedy transcripts of ``clips``, language by language, each timed at batch 1."""
    results: list[ClipResult] = []
    warm = False
    for language in sorted({c.language for c in clips}):
        model = eval_model.prepare(model, language)
        for clip in (c for c in clips if c.language == language):
            audio = read_clip_audio(set_name, clip)
            if not warm:
                decode_clip(model, processor, audio, language, max_new_tokens, guard)
                warm = True
            tokens, seconds, stop = decode_clip_stop(
                model, processor, audio, language, max_new_tokens, guard
            )
            text = processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            duration = len(audio) / SAMPLE_RATE
            results.append(
                ClipResult(
                    clip.id, language, clip.reference, text, duration, seconds, len(tokens), stop
                )
            )
    return results


def peak_memory_mb(
    eval_model: EvalModel, set_name: str, clip: AudioClip, max_new_tokens: int, device: str
) -> float:
    """Peak memory of loading ``eval_model`` and transcribing ``clip``, in a spawned process."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        threads = torch.get_num_threads()  # the child computes as this process does
        job = pool.submit(
            _peak_memory_child, eval_model, set_name, clip, max_new_tokens, device, threads
        )
        return float(job.result())


def _max_rss_mb() -> float:
    """This process's peak resident set so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 2**10


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 2**10
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        _status_mb("VmHWM")
    except OSError:
        return False
    return True


def _peak_memory_child(
    eval_model: EvalModel,
    set_name: str,
    clip: AudioClip,
    max_new_tokens: int,
    device: str,
    threads: int,
) -> float:
    """Runs in the spawned process: see the module docstring for what is measured."""
    from transformers import WhisperForConditionalGeneration  # noqa: F401  (imported before)

    torch.set_num_threads(threads)

    audio = read_clip_audio(set_name, clip)
    target = pick_device(device)
    cuda = target.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(target)
    proc = _reset_peak_rss()
    before = _status_mb("VmRSS") if proc else _max_rss_mb()
    model, processor, _ = load_on(eval_model, device)
    model = eval_model.prepare(model, clip.language)
    with torch.inference_mode():
        decode_clip(model, processor, audio, clip.language, max_new_tokens)
    if cuda:
        return torch.cuda.max_memory_allocated(target) / 2**20
    return (_status_mb("VmHWM") if proc else _max_rss_mb()) - before
