"""The few lines a person reads first when a run ends: the model against the teacher on the dev
split, the registry's decision and why, where the report is, and how to open the MLflow UI.
Pure: the evaluation's metrics.json and the registry's decision.json in, text out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from distilflow.evaluate.sets import DEV

NAMES = {"teacher": "teacher", "student": "student", "experts": "student + experts"}


def model_lines(metrics: Mapping[str, Any]) -> list[str]:
    """Each model's WER (macro mean over languages) and decoding speed against the teacher on
    the dev split (else the first set scored)."""
    sets = metrics.get("sets") or {}
    if not sets:
        return ["No evaluation figures (the evaluate stage has not run)."]
    name = DEV if DEV in sets else sorted(sets)[0]
    rank = {m: i for i, m in enumerate(NAMES)}  # teacher first, then the models made from it
    scored: dict[str, Any] = sets[name]
    models = dict(sorted(scored.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    teacher = models.get("teacher", {}).get("mean", {})
    first = next(iter(models.values()))
    clips = int(first["mean"].get("clips") or 0)
    langs = ", ".join(sorted(first.get("languages", {})))
    out = [
        f"On the {name} split ({clips} clips; {langs}), WER (macro mean over languages) and "
        "decoding speed at batch 1 (× the teacher's):"
    ]
    width = max(len(NAMES.get(m, m)) for m in models)
    for model, figures in models.items():
        mean = figures["mean"]
        wer, rtf = mean.get("wer"), mean.get("rtf")
        speed = teacher.get("rtf") / rtf if rtf and teacher.get("rtf") else None
        delta = (
            f"  ({100 * (wer - teacher['wer']):+.1f} points)"
            if model != "teacher" and wer is not None and teacher.get("wer") is not None
            else ""
        )
        out.append(
            f"  {NAMES.get(model, model):<{width}}  "
            f"{'–' if wer is None else f'{100 * wer:5.1f} %'}  "
            f"{'–' if speed is None else f'{speed:4.2f}x'}{delta}"
        )
    out.append(
        f"  ({clips} clips: one clip moves a language's WER by points; the report gives the "
        "intervals.)"
    )
    return out


def decision_lines(decision: Mapping[str, Any] | None, registered_now: bool) -> list[str]:
    """The registry's verdict on this run's model, with its reasons."""
    if not decision:
        return ["Registry: nothing registered yet."]
    d = decision["decision"]
    aliases = ", ".join(f"@{a}" for a in decision.get("aliases") or []) or "no alias"
    head = f"{decision['model_name']} version {decision['version']}"
    if not registered_now:
        return [f"Registry unchanged: {head} ({aliases})."]
    return [f"Registry: {head} {d['verdict']} ({aliases}), because:"] + [
        f"  - {r}" for r in d["reasons"]
    ]


def run_summary(
    ran: Sequence[str],
    metrics: Mapping[str, Any] | None,
    decision: Mapping[str, Any] | None,
    report: str | None,
    ui_command: str,
) -> str:
    """The summary of a run that ran the stages ``ran``."""
    lines = [f"distilflow: ran {', '.join(ran) if ran else 'nothing (every stage up to date)'}."]
    lines += ["", *(model_lines(metrics) if metrics else ["No evaluation figures yet."])]
    lines += ["", *decision_lines(decision, "register" in ran), ""]
    if report:
        lines.append(f"Report: {report}")
    lines.append(f"MLflow UI: {ui_command}")
    return "\n".join(lines)
