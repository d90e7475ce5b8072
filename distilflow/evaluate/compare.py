"""Paired comparisons of the evaluated models: WER differences with their intervals, loops apart.

On few clips a WER difference means little without its uncertainty (one looping clip moves a
language's WER by tens of points). For every set and language, each model is compared with the
teacher, and each model but the teacher with the student (the experts against the student they
extend), on the clips both transcribed:

- ``delta``: ``WER(model) - WER(baseline)`` (negative: the model makes fewer errors), corpus
  level from per-clip counts (``distilflow.text.clip_error_counts``), with ``low``/``high``, the
  paired bootstrap interval (``distilflow.stats.paired_bootstrap``: 95 %, 2000 resamples of the
  clips, seed 0): the interval holds 0 when the clips cannot tell the two models apart;
- ``loops_baseline``/``loops``: the clips on which each model looped (the repetition guard cut
  the transcript or it ran into the token budget: ``ClipResult.looped``), counted apart;
- ``settled_*``: the same difference on the clips where neither model looped, so that what the
  loops do and what the rest of the transcripts do can be read apart.

Clips whose reference normalises to nothing are left out, as the corpus WER leaves them out.
In ``metrics.json``: ``comparisons.<set>.<baseline>.<model>.<language>``. The results page reads
them through :func:`comparison_rows`. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distilflow.evaluate.metrics import PairResult
from distilflow.stats import CONFIDENCE, N_RESAMPLES, SEED, corpus_wer, paired_bootstrap
from distilflow.text import clip_error_counts

BASELINES = ("teacher", "student")  # each model is compared with these, in this order
METHOD = {
    "delta": "WER(model) - WER(baseline), corpus level, on the clips both scored",
    "interval": "paired clip bootstrap, percentile",
    "confidence": CONFIDENCE,
    "resamples": N_RESAMPLES,
    "seed": SEED,
    "loops": "clips the repetition guard cut or that ran into evaluate.max_new_tokens",
}


@dataclass(frozen=True)
class ClipScore:
    """One clip of one model: its errors and reference words (normalised), and whether it looped."""

    errors: int
    words: int
    looped: bool


def comparison_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(baseline, model) pairs: every model against the teacher, every model but the teacher
    against the student, in ``models`` order. Pure."""
    pairs = []
    for i, base in enumerate(BASELINES):
        if base not in models:
            continue
        pairs += [(base, m) for m in models if m != base and m not in BASELINES[:i]]
    return pairs


def clip_scores(result: PairResult) -> dict[tuple[str, str], ClipScore]:
    """(language, clip id) -> the clip's score, for one model on one set."""
    out = {}
    for c in result.clips:
        errors, words = clip_error_counts(c.language, c.reference, c.hypothesis)
        out[(c.language, c.id)] = ClipScore(errors, words, c.looped)
    return out


def _difference(
    base: Sequence[ClipScore], other: Sequence[ClipScore], prefix: str = ""
) -> dict[str, Any]:
    interval = paired_bootstrap(
        [c.errors for c in base], [c.errors for c in other], [c.words for c in base]
    )
    return {
        f"{prefix}clips": len(base),
        f"{prefix}delta": None if interval is None else interval.estimate,
        f"{prefix}low": None if interval is None else interval.low,
        f"{prefix}high": None if interval is None else interval.high,
    }


def compare_scores(
    base: Mapping[tuple[str, str], ClipScore], other: Mapping[tuple[str, str], ClipScore]
) -> dict[str, Any]:
    """The comparison of two models on the clips both scored (``base``'s keys, in order)."""
    keys = [k for k in base if k in other and base[k].words > 0]
    b, o = [base[k] for k in keys], [other[k] for k in keys]
    settled = [i for i in range(len(keys)) if not (b[i].looped or o[i].looped)]
    return {
        "wer_baseline": corpus_wer([c.errors for c in b], [c.words for c in b]),
        "wer": corpus_wer([c.errors for c in o], [c.words for c in o]),
        **_difference(b, o),
        "loops_baseline": sum(c.looped for c in b),
        "loops": sum(c.looped for c in o),
        **_difference([b[i] for i in settled], [o[i] for i in settled], "settled_"),
    }


def build_comparisons(results: Sequence[PairResult]) -> dict[str, Any]:
    """``<set>.<baseline>.<model>.<language>``: :func:`compare_scores` of each pair of
    :func:`comparison_pairs` on each set and language both models scored."""
    by_set: dict[str, dict[str, PairResult]] = {}
    for r in results:
        by_set.setdefault(r.eval_set, {})[r.model] = r
    out: dict[str, Any] = {}
    for set_name, by_model in by_set.items():
        scores = {name: clip_scores(r) for name, r in by_model.items()}
        for base, model in comparison_pairs(list(by_model)):
            languages = sorted(
                {lang for lang, _ in scores[base]} & {lang for lang, _ in scores[model]}
            )
            out.setdefault(set_name, {}).setdefault(base, {})[model] = {
                lang: compare_scores(
                    {k: v for k, v in scores[base].items() if k[0] == lang},
                    {k: v for k, v in scores[model].items() if k[0] == lang},
                )
                for lang in languages
            }
    return out


def comparison_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (set, baseline, model, language) of ``metrics.json``'s comparisons: the
    fields of :func:`compare_scores` plus ``set``, ``baseline``, ``model``, ``language``
    (None where a figure is undefined). For reports and the results page."""
    rows = []
    for set_name, by_base in (metrics.get("comparisons") or {}).items():
        for base, by_model in by_base.items():
            for model, by_lang in by_model.items():
                for lang, values in by_lang.items():
                    head = {"set": set_name, "baseline": base, "model": model, "language": lang}
                    rows.append(head | dict(values))
    return rows


def interval_text(delta: float | None, low: float | None, high: float | None) -> str:
    """``+0.120 [-0.050, +0.310]``, or ``–`` when undefined."""
    if delta is None or low is None or high is None:
        return "–"
    return f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]"


def comparison_markdown(metrics: Mapping[str, Any], set_name: str) -> list[str]:
    """report.md's table of the paired differences on one set (nothing without comparisons)."""
    rows = [r for r in comparison_rows(metrics) if r["set"] == set_name]
    if not rows:
        return []
    lines = [
        "",
        f"Paired differences on `{set_name}` (model − baseline, same clips; 95 % bootstrap "
        "interval; loops counted apart):",
        "",
        "| language | model − baseline | clips | WER (baseline → model) | Δ WER [95 % interval] "
        "| loops (baseline → model) | Δ WER without loops [interval] (clips) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        wers = f"{_num(r['wer_baseline'])} → {_num(r['wer'])}"
        settled = interval_text(r["settled_delta"], r["settled_low"], r["settled_high"])
        lines.append(
            f"| {r['language']} | {r['model']} − {r['baseline']} | {r['clips']} | {wers} "
            f"| {interval_text(r['delta'], r['low'], r['high'])} "
            f"| {r['loops_baseline']} → {r['loops']} | {settled} ({r['settled_clips']}) |"
        )
    return lines


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
