"""Evaluation measures: one model's transcripts of one set, aggregated per language and model.

``metrics.json`` (see ``build_metrics``): ``sets.<set>.<model>.languages.<lang>`` holds ``wer``
(Whisper-normalised, accents stripped; CER for languages without spaces), ``wer_orthographic``
(raw text, whitespace collapsed), ``insertion_rate``, ``repeated_5grams`` (summed over the
clips), ``loops`` (clips whose transcript the repetition guard cut or that ran into the token
budget: ``ClipResult.looped``), ``rtf``, ``tokens_per_s`` and ``clips``;
``sets.<set>.<model>.mean`` the macro mean over languages (rtf, tokens_per_s, repeats and loops
over all clips); ``models.<model>`` its ``parameters``, ``peak_memory_mb``, ``rtf``,
``tokens_per_s`` and ``wer_mean`` (macro mean over every set and language); ``comparisons``
the paired WER differences with their intervals (``distilflow.evaluate.compare``). Everything
but ``evaluate_pair`` is pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from distilflow.decoding.greedy import macro_mean
from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
from distilflow.evaluate.hallucination import insertion_rate_corpus, repeated_ngrams_text
from distilflow.evaluate.models import ClipResult, EvalModel, load_on, transcribe_clips
from distilflow.evaluate.sets import EvalSet
from distilflow.lineage import Lineage, combine_hashes
from distilflow.models.device import count_parameters
from distilflow.text import error_rate_corpus, error_rate_orthographic, normalizer_for

MEASURES = (
    "wer",
    "wer_orthographic",
    "insertion_rate",
    "repeated_5grams",
    "loops",
    "rtf",
    "tokens_per_s",
)


@dataclass(frozen=True)
class PairResult:
    """One model's transcripts of one eval set."""

    model: str
    eval_set: str
    ref: str  # what the model was loaded from
    model_id: str  # fingerprint of its weights
    parameters: int
    clips: tuple[ClipResult, ...]


def evaluate_pair(
    eval_model: EvalModel,
    eval_set: EvalSet,
    max_new_tokens: int,
    device: str,
    guard: LoopGuard = DEFAULT_GUARD,
) -> PairResult:
    """Load ``eval_model`` and transcribe the clips of ``eval_set`` it covers."""
    clips = [c for c in eval_set.clips if eval_model.language in (None, c.language)]
    model, processor, fingerprint = load_on(eval_model, device)
    results = transcribe_clips(
        eval_model, model, processor, eval_set.name, clips, max_new_tokens, guard
    )
    return PairResult(
        eval_model.name,
        eval_set.name,
        eval_model.ref,
        fingerprint,
        count_parameters(model),
        tuple(results),
    )


def rtf(decode_s: float, audio_s: float) -> float:
    """Real-time factor: seconds of computing per second of audio (below 1: faster). Pure."""
    return decode_s / audio_s if audio_s > 0 else float("nan")


def tokens_per_second(tokens: int, decode_s: float) -> float:
    """Generated tokens per second of decoding. Pure."""
    return tokens / decode_s if decode_s > 0 else float("nan")


def language_metrics(language: str, clips: Sequence[ClipResult]) -> dict[str, float]:
    """Every measure of one language's clips. Pure."""
    refs = [c.reference for c in clips]
    hyps = [c.hypothesis for c in clips]
    norm = normalizer_for(language)
    decode_s = sum(c.decode_s for c in clips)
    return {
        "wer": error_rate_corpus(language, refs, hyps),
        "wer_orthographic": error_rate_orthographic(language, refs, hyps),
        "insertion_rate": insertion_rate_corpus(language, refs, hyps, norm),
        "repeated_5grams": float(sum(repeated_ngrams_text(h, language, norm) for h in hyps)),
        "loops": float(sum(c.looped for c in clips)),
        "rtf": rtf(decode_s, sum(c.audio_s for c in clips)),
        "tokens_per_s": tokens_per_second(sum(c.tokens for c in clips), decode_s),
        "clips": float(len(clips)),
    }


def overall(
    clips: Sequence[ClipResult], languages: dict[str, dict[str, float]]
) -> dict[str, float]:
    """Macro means over languages of the error rates; speed and repeats over all clips. Pure."""
    decode_s = sum(c.decode_s for c in clips)
    means = {
        m: macro_mean({k: v[m] for k, v in languages.items()})
        for m in ("wer", "wer_orthographic", "insertion_rate")
    }
    return means | {
        "repeated_5grams": sum(v["repeated_5grams"] for v in languages.values()),
        "loops": sum(v["loops"] for v in languages.values()),
        "rtf": rtf(decode_s, sum(c.audio_s for c in clips)),
        "tokens_per_s": tokens_per_second(sum(c.tokens for c in clips), decode_s),
        "clips": float(len(clips)),
    }


def pair_metrics(result: PairResult) -> dict[str, Any]:
    """``languages`` (per language) and ``mean`` (overall) of one model on one set. Pure."""
    languages = {
        lang: language_metrics(lang, [c for c in result.clips if c.language == lang])
        for lang in sorted({c.language for c in result.clips})
    }
    return {"languages": languages, "mean": overall(result.clips, languages)}


def build_metrics(results: Sequence[PairResult], memory_mb: dict[str, float]) -> dict[str, Any]:
    """The content of metrics.json (NaN kept here; ``finite`` turns it into null). Pure."""
    sets: dict[str, dict[str, Any]] = {}
    for r in results:
        sets.setdefault(r.eval_set, {})[r.model] = pair_metrics(r)
    models: dict[str, Any] = {}
    for name in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == name]
        clips = [c for r in mine for c in r.clips]
        wers = {
            f"{r.eval_set}/{lang}": v["wer"]
            for r in mine
            for lang, v in sets[r.eval_set][name]["languages"].items()
        }
        decode_s = sum(c.decode_s for c in clips)
        models[name] = {
            "parameters": mine[0].parameters,
            "peak_memory_mb": memory_mb.get(name, float("nan")),
            "rtf": rtf(decode_s, sum(c.audio_s for c in clips)),
            "tokens_per_s": tokens_per_second(sum(c.tokens for c in clips), decode_s),
            "wer_mean": macro_mean(wers),
        }
    return {"sets": sets, "models": models}


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (valid JSON). Pure."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def stage_lineage(
    params_hash: str, sets: Sequence[EvalSet], results: Sequence[PairResult]
) -> Lineage:
    """Commit, params hash, a hash of every clip and model weights, and the teacher's id."""
    from distilflow.lineage import git_commit

    inputs = [c.hash for s in sets for c in s.clips] + [f"model:{r.model_id}" for r in results]
    teacher = next((r.model_id for r in results if r.model == "teacher"), None)
    return Lineage(git_commit(), params_hash, combine_hashes(set(inputs)), teacher)


def transcript_records(results: Sequence[PairResult]) -> list[dict[str, Any]]:
    """One JSON line per (model, set, clip)."""
    return [{"model": r.model, "set": r.eval_set, **asdict(c)} for r in results for c in r.clips]


def report_record(
    models: Sequence[EvalModel],
    sets: Sequence[EvalSet],
    results: Sequence[PairResult],
    lineage: Lineage,
) -> dict[str, Any]:
    """report.json: where every figure came from."""
    ids = {r.model: (r.model_id, r.parameters) for r in results}
    return {
        "models": {
            m.name: {"ref": m.ref, "id": ids.get(m.name, (None, None))[0], "language": m.language}
            for m in models
        },
        "sets": {s.name: {"clips": s.counts(), "skipped": s.skipped} for s in sets},
        "lineage": lineage.to_dict(),
    }
