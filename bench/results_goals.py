"""The results page's Goals section: each goal of the issue ("A student worth deploying") checked
against the run's figures, Met or **Not met**, with the numbers, the interval, and by how much a
missed goal misses. Pure: the paired comparisons (``bench.results_stats.comparisons``) and
``metrics.json`` in, markdown lines and a verdict per goal out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.results_stats import (
    held_out_sets,
    interval_points,
    points,
    row_over,
    set_figure,
    verdict,
)
from bench.results_tables import count, pct, short

EXPERTS_LIMIT = 0.0  # experts at or below the teacher on their languages
OTHER_LIMIT = 0.01  # the languages without experts: within 1 point of the teacher
STUDENT_LIMIT = 0.03  # the student alone: within 3 points of the teacher's mean
RIVALS = ("student", "finetune", "lora")  # the experts must beat each


def mark(met: bool | None) -> str:
    """Met, **Not met**, or **Not shown** (not measured, or better by its point figure only)."""
    return "Met" if met else "**Not shown**" if met is None else "**Not met**"


def within(row: Mapping[str, Any] | None, limit: float) -> tuple[bool | None, str]:
    """Whether the point difference is at most ``limit``, and the figures saying so."""
    if row is None or row.get("delta") is None:
        return None, "not measured"
    met = bool(row["delta"] <= limit + 1e-12)
    text = (
        f"{pct(row['wer'])} against {pct(row['wer_baseline'])}, Δ {interval_points(row)} points "
        f"(goal ≤ {points(limit)})"
    )
    return met, text + ("" if met else f", missed by {100 * (row['delta'] - limit):.1f} points")


def goal_experts_vs_teacher(
    rows: Sequence[Mapping[str, Any]], experts: Sequence[str]
) -> dict[str, Any]:
    """(a) experts at or below the teacher on each expert language, the others within 1 point."""
    langs = sorted({r["language"] for r in rows if r["set"] == "test" and len(r["over"]) == 1})
    parts, verdicts = [], []
    for lang in langs:
        limit = EXPERTS_LIMIT if lang in experts else OTHER_LIMIT
        met, text = within(row_over(rows, "test", "teacher", "experts", [lang]), limit)
        verdicts.append(met)
        parts.append(f"{lang}: {text} ({mark(met)})")
    met = None if not verdicts or None in verdicts else all(verdicts)
    title = (
        f"(a) student + experts at or below the teacher's WER on each of {', '.join(experts)} "
        "of `test`, the other languages within 1 point"
    )
    return {"goal": "a", "title": title, "met": met, "details": parts}


def goal_student_mean(
    rows: Sequence[Mapping[str, Any]], set_name: str, langs: list[str]
) -> dict[str, Any]:
    """(b), (c): the student alone within 3 points of the teacher's mean on ``set_name``."""
    met, text = within(row_over(rows, set_name, "teacher", "student", langs), STUDENT_LIMIT)
    title = (
        f"({'b' if set_name == 'test' else 'c'}) the student alone within 3 points of the "
        f"teacher on `{set_name}` (mean over {', '.join(langs)})"
    )
    return {"goal": "b" if set_name == "test" else "c", "title": title, "met": met,
            "details": [f"student {text}"]}  # fmt: skip


def goal_experts_best(rows: Sequence[Mapping[str, Any]], experts: Sequence[str]) -> dict[str, Any]:
    """(d) the experts better than the student alone, fine-tuning and LoRA (the interval below
    0; tie where it holds 0), over the expert languages and per language."""
    parts: list[str] = []
    verdicts: list[bool | None] = []
    for rival in RIVALS:
        mean_row = row_over(rows, "test", rival, "experts", experts)
        if mean_row is None:
            parts.append(f"against {short(rival)}: not run")
            verdicts.append(None)
            continue
        reads = verdict(mean_row)
        per_lang = [
            f"{lang} {verdict(r)}"
            for lang in experts
            if (r := row_over(rows, "test", rival, "experts", [lang])) is not None
        ]
        # better without an interval: not shown either way
        verdicts.append(True if reads == "better" else None if "better" in reads else False)
        parts.append(
            f"against {short(rival)}: {pct(mean_row['wer'])} against "
            f"{pct(mean_row['wer_baseline'])}, Δ {interval_points(mean_row)} points: **{reads}** "
            f"({'; '.join(per_lang)})"
        )
    met = False if False in verdicts else None if None in verdicts else True
    title = (
        f"(d) student + experts better than the student alone, fine-tuning and LoRA on `test` "
        f"(mean over {', '.join(experts)}; better: the interval lies below 0)"
    )
    return {"goal": "d", "title": title, "met": met, "details": parts}


def goal_repeats(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """(e) no more repeated 5-grams and no more loops than the teacher, on every test set."""
    parts, verdicts = [], []
    for set_name in held_out_sets(metrics):
        by_model = metrics["sets"][set_name]
        teacher = by_model["teacher"]["mean"]
        for model in (m for m in ("student", "experts") if m in by_model):
            mine = by_model[model]["mean"]
            ok = [
                mine.get(k) is not None and mine[k] <= teacher.get(k, float("nan"))
                for k in ("repeated_5grams", "loops")
            ]
            verdicts.append(all(ok))
            parts.append(
                f"`{set_name}` {model}: repeated 5-grams {count(mine['repeated_5grams'])} "
                f"(teacher {count(teacher['repeated_5grams'])}), loops {count(mine.get('loops'))} "
                f"(teacher {count(teacher.get('loops'))}) ({mark(all(ok))})"
            )
    title = "(e) no more repeated 5-grams and no more loops than the teacher"
    return {"goal": "e", "title": title, "met": bool(verdicts) and all(verdicts), "details": parts}


def goals(
    rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any], experts: Sequence[str]
) -> list[dict[str, Any]]:
    """Every goal, in the issue's order."""
    out = [goal_experts_vs_teacher(rows, experts)]
    for set_name in held_out_sets(metrics):
        langs = sorted(set_figure(metrics, None, set_name, "wer")["teacher"])
        out.append(goal_student_mean(rows, set_name, langs))
    if not any(g["goal"] == "c" for g in out):
        out.append({"goal": "c", "title": "(c) the student on a second corpus's test set",
                    "met": None, "details": ["no `test-<corpus>` set in this run"]})  # fmt: skip
    out += [goal_experts_best(rows, experts), goal_repeats(metrics)]
    return sorted(out, key=lambda g: g["goal"])


def goals_section(goal_list: Sequence[Mapping[str, Any]]) -> list[str]:
    """The Goals section: one line per goal, its verdict, then its figures."""
    out = [
        "## Goals",
        "",
        "Each goal of the issue, checked against the figures above (point differences against "
        "the goal's limit, in WER points; the 95 % interval beside each; *missed by*: the point "
        "difference beyond the limit):",
        "",
    ]
    for g in goal_list:
        out.append(f"- **{g['title']}**: {mark(g['met'])}.")
        out += [f"  - {d}" for d in g["details"]]
    out.append("")
    return out
