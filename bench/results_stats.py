"""The results page's paired comparisons: every WER difference on the page with its interval and
the loops of both models counted apart. Pure: dicts in, rows out.

Per language, the evaluation's own figures (``metrics.json``'s comparisons, read through
``distilflow.evaluate.compare.comparison_rows``) where it compared the pair; otherwise the same
computation (``compare_scores``) on per-clip transcripts: the evaluation's
``transcripts.jsonl``, the baselines' and the depth sweep's ``clips``. Over several languages,
the macro mean (the mean of the languages' corpus WERs, as the tables' mean rows) with a
stratified paired bootstrap: each resample draws every language's clips with replacement,
within that language, and averages the languages' differences. Without per-clip data a row
keeps its point figures and says "no interval".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from distilflow.evaluate.compare import ClipScore, clip_scores, compare_scores, comparison_rows
from distilflow.evaluate.metrics import PairResult
from distilflow.evaluate.models import LOOP_GUARD, ClipResult
from distilflow.stats import CONFIDENCE, N_RESAMPLES, SEED

Key = tuple[str, str]  # (language, clip id)
Scores = dict[Key, ClipScore]
MEAN = "mean"
_FIELDS = {f.name for f in dataclasses.fields(ClipResult)}


def scores_of(clips: Iterable[Mapping[str, Any]]) -> Scores:
    """Per-clip scores of one model on one set, from per-clip dicts (``ClipResult``'s fields;
    a dict with ``looped`` but no ``stop`` counts as a loop the guard cut)."""
    results = []
    for c in clips:
        fields = {k: v for k, v in c.items() if k in _FIELDS}
        if "stop" not in fields and c.get("looped"):
            fields["stop"] = LOOP_GUARD
        results.append(ClipResult(**fields))
    return clip_scores(PairResult("", "", "", "", 0, tuple(results)))


def transcript_scores(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Scores]:
    """(set, model) -> per-clip scores, from ``transcripts.jsonl``'s rows."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        grouped.setdefault((str(r["set"]), str(r["model"])), []).append(r)
    return {k: scores_of(v) for k, v in grouped.items()}


def baseline_scores(baselines: Mapping[str, Any] | None) -> dict[str, Scores]:
    """method -> per-clip scores on ``test`` over the languages whose ``clips`` were kept."""
    out: dict[str, Scores] = {}
    for method, langs in (baselines or {}).items():
        clips = [c for row in langs.values() for c in (row.get("clips") or [])]
        if clips:
            out[method] = scores_of(clips)
    return out


def languages_of(scores: Scores | None) -> set[str]:
    return {lang for lang, _ in scores} if scores else set()


def only(scores: Scores, language: str) -> Scores:
    return {k: v for k, v in scores.items() if k[0] == language}


def macro_compare(base: Scores, other: Scores, languages: Sequence[str]) -> dict[str, Any]:
    """The macro mean over ``languages`` of ``WER(other) - WER(base)`` on the clips both scored,
    with its stratified paired bootstrap interval (``distilflow.stats``' resamples, confidence
    and seed), and both models' loops."""
    per_lang = []
    for lang in languages:
        keys = [k for k in base if k[0] == lang and k in other and base[k].words > 0]
        if keys:
            per_lang.append(
                (
                    np.array([base[k].errors for k in keys]),
                    np.array([other[k].errors for k in keys]),
                    np.array([base[k].words for k in keys]),
                    sum(base[k].looped for k in keys),
                    sum(other[k].looped for k in keys),
                )
            )
    if len(per_lang) < len(languages):
        return {}
    rng = np.random.default_rng(SEED)
    samples = np.zeros(N_RESAMPLES)
    for err_a, err_b, words, _, _ in per_lang:
        idx = rng.integers(0, len(words), size=(N_RESAMPLES, len(words)))
        samples += (err_b - err_a)[idx].sum(axis=1) / words[idx].sum(axis=1)
    samples /= len(per_lang)
    tail = (1.0 - CONFIDENCE) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    wer_base = float(np.mean([a.sum() / w.sum() for a, _, w, _, _ in per_lang]))
    wer = float(np.mean([b.sum() / w.sum() for _, b, w, _, _ in per_lang]))
    return {
        "clips": sum(len(w) for _, _, w, _, _ in per_lang),
        "wer_baseline": wer_base,
        "wer": wer,
        "delta": wer - wer_base,
        "low": float(low),
        "high": float(high),
        "loops_baseline": sum(x[3] for x in per_lang),
        "loops": sum(x[4] for x in per_lang),
    }


def point_row(wer_base: float | None, wer: float | None, **extra: Any) -> dict[str, Any]:
    """A comparison without per-clip data: the point figures, no interval."""
    delta = None if wer_base is None or wer is None else wer - wer_base
    return {"wer_baseline": wer_base, "wer": wer, "delta": delta, "low": None, "high": None} | extra


def verdict(row: Mapping[str, Any]) -> str:
    """``better`` (the interval lies below 0: the model makes fewer errors), ``worse`` (above),
    ``tie`` (it holds 0); without an interval, the point's sign and "no interval"."""
    delta, low, high = row.get("delta"), row.get("low"), row.get("high")
    if delta is None:
        return "–"
    if low is None or high is None:
        side = "better" if delta < 0 else "worse" if delta > 0 else "equal"
        return f"{side} (no interval)"
    return "better" if high < 0 else "worse" if low > 0 else "tie"


def points(value: float | None) -> str:
    """A WER difference (a fraction) in signed points: ``+12.0``."""
    return "–" if value is None else f"{100 * value:+.1f}"


def interval_points(row: Mapping[str, Any]) -> str:
    """``+12.0 [-5.0, +31.0]`` in WER points, ``+12.0 (no interval)`` or ``–``."""
    delta, low, high = row.get("delta"), row.get("low"), row.get("high")
    if delta is None:
        return "–"
    if low is None or high is None:
        return f"{points(delta)} (no interval)"
    return f"{points(delta)} [{points(low)}, {points(high)}]"


def metric_rows(metrics: Mapping[str, Any]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """(set, baseline, model, language) -> the evaluation's own comparison row."""
    return {
        (r["set"], r["baseline"], r["model"], r["language"]): r for r in comparison_rows(metrics)
    }


# (baseline, model): every comparison the page states; delta = WER(model) - WER(baseline)
PAIRS = (
    ("teacher", "student"),
    ("teacher", "experts"),
    ("student", "experts"),
    ("student", "finetune"),
    ("student", "lora"),
    ("finetune", "experts"),
    ("lora", "experts"),
)


def held_out_sets(metrics: Mapping[str, Any]) -> list[str]:
    """The held-out test sets of the evaluation: ``test`` first, then ``test-<corpus>``."""
    names = [s for s in metrics["sets"] if s == "test" or s.startswith("test-")]
    return sorted(names, key=lambda s: (s != "test", s))


def set_figure(
    metrics: Mapping[str, Any], baselines: Mapping[str, Any] | None, set_name: str, measure: str
) -> dict[str, dict[str, float | None]]:
    """model -> language -> ``measure`` on ``set_name`` (the baselines were scored on ``test``
    only, for the languages they were trained for)."""
    out: dict[str, dict[str, float | None]] = {}
    for model, pair in metrics["sets"][set_name].items():
        out[model] = {lang: m.get(measure) for lang, m in pair["languages"].items()}
    if set_name == "test":
        for method, langs in (baselines or {}).items():
            out[method] = {lang: r["test"].get(measure) for lang, r in langs.items()}
    return out


def pair_rows(
    set_name: str,
    pair: tuple[str, str],
    figures: Mapping[str, Mapping[str, Mapping[str, Any]]],
    scores: Mapping[str, Scores],
    official: Mapping[tuple[str, str, str, str], Mapping[str, Any]],
    subsets: Sequence[Sequence[str]],
) -> list[dict[str, Any]]:
    """One comparison on one set: a row per language, then a macro-mean row per subset of
    languages (``figures``: ``wer`` and ``loops``, model -> language -> value)."""
    base, model = pair
    wer, loops = figures["wer"], figures["loops"]
    langs = sorted(set(wer[base]) & set(wer[model]))
    both = languages_of(scores.get(base)) & languages_of(scores.get(model))
    rows = []
    for lang in langs:
        row = official.get((set_name, base, model, lang))
        if row is None and lang in both:
            row = compare_scores(only(scores[base], lang), only(scores[model], lang))
        if row is None:
            row = point_row(
                wer[base][lang], wer[model][lang], clips=None,
                loops_baseline=loops[base].get(lang), loops=loops[model].get(lang),
            )  # fmt: skip
        rows.append(dict(row) | {"set": set_name, "baseline": base, "model": model} | {
            "language": lang, "over": [lang]})  # fmt: skip
    for over in subsets:
        over = [x for x in over if x in langs]
        if len(over) < 2 or any(r["over"] == over for r in rows):
            continue
        row = macro_compare(scores[base], scores[model], over) if set(over) <= both else {}
        if not row:
            row = point_row(
                _mean([wer[base][x] for x in over]), _mean([wer[model][x] for x in over]),
                clips=None, loops_baseline=_sum([loops[base].get(x) for x in over]),
                loops=_sum([loops[model].get(x) for x in over]),
            )  # fmt: skip
        head = {"set": set_name, "baseline": base, "model": model, "language": MEAN, "over": over}
        rows.append(head | row)
    return rows


def comparisons(
    metrics: Mapping[str, Any],
    baselines: Mapping[str, Any] | None,
    transcripts: Iterable[Mapping[str, Any]],
    expert_languages: Sequence[str],
) -> list[dict[str, Any]]:
    """Every comparison of :data:`PAIRS` on every test set: per language, over all the pair's
    languages and over the expert languages."""
    by_set = transcript_scores(transcripts)
    methods = baseline_scores(baselines)
    official = metric_rows(metrics)
    rows: list[dict[str, Any]] = []
    for set_name in held_out_sets(metrics):
        figures = {m: set_figure(metrics, baselines, set_name, m) for m in ("wer", "loops")}
        scores = {model: s for (s_name, model), s in by_set.items() if s_name == set_name}
        if set_name == "test":
            scores |= methods
        everything = sorted(figures["wer"].get("teacher", {}))
        for pair in PAIRS:
            if all(m in figures["wer"] for m in pair):
                subsets = [everything, list(expert_languages)]
                rows += pair_rows(set_name, pair, figures, scores, official, subsets)
    return rows


def find(
    rows: Iterable[Mapping[str, Any]], set_name: str, base: str, model: str, language: str
) -> list[Mapping[str, Any]]:
    """The rows of one comparison on one set for one language (or every ``mean`` row)."""
    return [
        r
        for r in rows
        if (r["set"], r["baseline"], r["model"], r["language"]) == (set_name, base, model, language)
    ]


def row_over(
    rows: Sequence[Mapping[str, Any]], set_name: str, base: str, model: str, over: Sequence[str]
) -> Mapping[str, Any] | None:
    """The comparison row of ``model`` against ``base`` on ``set_name`` over the languages
    ``over`` (one language: its own row; several: their macro mean)."""
    for r in rows:
        if (r["set"], r["baseline"], r["model"]) == (set_name, base, model) and r["over"] == list(
            over
        ):
            return r
    return None


def _mean(values: Sequence[float | None]) -> float | None:
    ok = [v for v in values if v is not None and v == v]
    return sum(ok) / len(ok) if ok and len(ok) == len(values) else None


def _sum(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)
