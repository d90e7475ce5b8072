"""The results page's tables of WER, paired differences, hallucination measures and stage times.
Pure: the results run's dicts in, markdown out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.results_plots import LABELS, MODELS
from bench.results_stats import MEAN, PAIRS, interval_points, set_figure, verdict


def mean(values: Sequence[float | None]) -> float:
    ok = [v for v in values if v is not None and not math.isnan(v)]
    return sum(ok) / len(ok) if ok else float("nan")


def pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def count(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.0f}"


def label(model: str) -> str:
    return LABELS.get(model, model)


def short(model: str) -> str:
    """The model's name in a comparison: ``experts``, ``fine-tuning``..."""
    return {"finetune": "fine-tuning", "lora": "LoRA"}.get(model, model)


def wer_table(wer: Mapping[str, Mapping[str, float | None]], languages: Sequence[str]) -> str:
    """WER % per language and model; bold: the best non-teacher model of a language. Mean rows:
    over every language (models scored on all of them), and over the languages every model
    was scored on where that is fewer."""
    models = [m for m in MODELS if m in wer]
    rows = [
        "| language | " + " | ".join(label(m) for m in models) + " |",
        "|" + " --- |" * (len(models) + 1),
    ]
    for lang in languages:
        scored = [wer[m][lang] for m in models if m != "teacher" and wer[m].get(lang) is not None]
        best = min(scored, default=None)  # type: ignore[type-var]
        cells = []
        for m in models:
            v = wer[m].get(lang)
            text = pct(v)
            cells.append(f"**{text}**" if v is not None and v == best and m != "teacher" else text)
        rows.append(f"| {lang} | " + " | ".join(cells) + " |")
    common = [x for x in languages if all(wer[m].get(x) is not None for m in models)]
    for over in dict.fromkeys((tuple(languages), tuple(common))):
        if len(over) < 2:
            continue
        cells = [
            pct(mean([wer[m][x] for x in over])) if all(x in wer[m] for x in over) else "–"
            for m in models
        ]
        rows.append(f"| mean ({', '.join(over)}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def comparison_table(rows: Sequence[Mapping[str, Any]], set_name: str) -> str:
    """The paired differences on one set: each comparison of :data:`PAIRS`, per language and
    macro mean, with its 95 % interval, what it shows, and both models' loops apart."""
    out = [
        "| model − baseline | language | clips | WER baseline → model | Δ WER [95 % interval] "
        "| reads | loops baseline → model |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for base, model in PAIRS:
        for r in (
            r for r in rows if (r["set"], r["baseline"], r["model"]) == (set_name, base, model)
        ):
            where = r["language"] if r["language"] != MEAN else f"mean ({', '.join(r['over'])})"
            out.append(
                f"| {short(model)} − {short(base)} | {where} | {count(r.get('clips'))} "
                f"| {pct(r['wer_baseline'])} → {pct(r['wer'])} | {interval_points(r)} "
                f"| {verdict(r)} | {count(r.get('loops_baseline'))} → {count(r.get('loops'))} |"
            )
    return "\n".join(out)


def hallucination_table(
    metrics: Mapping[str, Any], baselines: Mapping[str, Any] | None, set_name: str
) -> str:
    """Insertions, repeated 5-grams and loops of every model on one set."""
    rows = [
        "| model | insertion rate | repeated 5-grams | loops | clips |",
        "| --- | --- | --- | --- | --- |",
    ]
    for model in (m for m in MODELS if m in metrics["sets"][set_name]):
        m = metrics["sets"][set_name][model]["mean"]
        rows.append(
            f"| {label(model)} | {pct(m['insertion_rate'])} % | {count(m['repeated_5grams'])} "
            f"| {count(m.get('loops'))} | {count(m['clips'])} |"
        )
    if set_name != "test":
        return "\n".join(rows)
    for method, langs in (baselines or {}).items():
        tests = [r["test"] for r in langs.values()]
        loops = [t.get("loops") for t in tests]
        rows.append(
            f"| {label(method)} ({', '.join(langs)}) | "
            f"{pct(mean([t['insertion_rate'] for t in tests]))} % "
            f"| {count(sum(t['repeated_5grams'] for t in tests))} "
            f"| {count(None if None in loops else sum(loops))} "
            f"| {count(sum(t['clips'] for t in tests))} |"
        )
    return "\n".join(rows)


def stage_table(stages: Sequence[Mapping[str, Any]]) -> str:
    rows = ["| stage | wall time | peak memory (RSS) |", "| --- | --- | --- |"]
    for s in stages:
        minutes, seconds = divmod(round(s["wall_s"]), 60)
        rows.append(
            f"| {s['stage']} | {minutes} min {seconds:02d} s | {s['peak_rss_mb']:.0f} MiB |"
        )
    total = sum(s["wall_s"] for s in stages)
    rows.append(f"| **all** | **{int(total // 60)} min {int(total % 60):02d} s** | |")
    return "\n".join(rows)


def set_section(
    set_name: str,
    metrics: Mapping[str, Any],
    baselines: Mapping[str, Any] | None,
    rows: Sequence[Mapping[str, Any]],
    corpus: str,
) -> list[str]:
    """One test set: its WER table, its paired differences, its hallucination measures."""
    wer = set_figure(metrics, baselines, set_name, "wer")
    langs = sorted(wer["teacher"])
    clips = {
        lang: count(m["clips"])
        for lang, m in metrics["sets"][set_name]["teacher"]["languages"].items()
    }
    return [
        f"### `{set_name}`: {corpus}'s held-out split "
        f"({', '.join(f'{k} {v}' for k, v in clips.items())} clips)",
        "",
        wer_table(wer, langs),
        "",
        f"Paired differences on `{set_name}`, in WER points (model − baseline on the clips both "
        "transcribed: negative, the model makes fewer errors), with the 95 % paired bootstrap "
        "interval; *reads*: better or worse where the interval excludes 0, tie where it holds "
        "it; loops (clips the repetition guard cut or that ran into the token budget) of both "
        "models counted apart:",
        "",
        comparison_table(rows, set_name),
        "",
        f"Hallucination measures on `{set_name}` (insertions per reference word; repeated "
        "5-grams, summed over clips; loops):",
        "",
        hallucination_table(metrics, baselines, set_name),
        "",
    ]
