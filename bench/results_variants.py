"""The results page's "which choice gives what" of the dynamic-context models (issues 21, 23).

Each variant of ``bench.results_context`` changes one thing of ``dynamic-6`` (the teacher made
fast: its decoder frozen, the whole encoder trained by self-distillation): only the top two
encoder layers and the norms trained (``dynamic-6-top2``, the shipped default), that with 4 of
the 6 decoder layers kept and trained (``dynamic-4-top2``; 2, ``dynamic-2-top2``), or the
Distill-L2S text-alignment term with a real multilingual sentence encoder added
(``dynamic-6-l2s``). Compared at the same
step: dev WER, training time, and on the test splits the paired WER difference to the teacher
served the same way in the same benchmark run (``bench.deployed``'s transcripts): int8 results
differ between machines, so variants measured on different days are compared through their own
run's teacher, never with each other directly.

Variants trained in an earlier session are carried into a later deployed benchmark from the
results record (their rows keep their own run's speed-up and teacher difference, marked), when
both runs scored the same clips: the 2-CPU machine cannot retrain every variant in one session.
Every function here is pure.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from distilflow.stats import paired_bootstrap
from distilflow.text import clip_error_counts

REFERENCE = "dynamic-6"  # what each variant changes one thing of
BACKEND = " ct2"  # bench.deployed's row name of a model served through ctranslate2
TEACHER = "teacher" + BACKEND  # the teacher served the same way (padded), in the same run
WHAT: dict[str, str] = {
    "dynamic-6": "whole encoder trained (self-distillation)",
    "dynamic-6-top2": "top 2 encoder layers + norms trained (the shipped default)",
    "dynamic-4-top2": "as dynamic-6-top2, with 4 of the 6 decoder layers (trained, lr 1e-4)",
    "dynamic-2-top2": "as dynamic-4-top2, with 2 decoder layers (the first and the last)",
    "dynamic-6-top2-seed1": "dynamic-6-top2 trained again with seed 1 (training noise)",
    "dynamic-6-seed1": "dynamic-6 trained again with seed 1 (training noise)",
    "dynamic-6-l2s": "as dynamic-6, plus sentence-level Distill-L2S (USE multilingual v3)",
}


def clip_ids(deployed_set: Mapping[str, Any]) -> list[str]:
    return [str(t["id"]) for t in deployed_set.get("transcripts") or []]


def carry_rows(
    fresh: Mapping[str, Any], earlier: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """``fresh`` with the rows of ``earlier`` it lacks, in each set where both scored the same
    clips; each carried row is marked with its run's date (its speed-up stays against its own
    run's baseline). Returns (deployed, carried row names). Pure."""
    out = copy.deepcopy(dict(fresh))
    carried: set[str] = set()
    if not earlier:
        return out, []
    for name, s in out.get("sets", {}).items():
        old = (earlier.get("sets") or {}).get(name)
        if not old or clip_ids(old) != clip_ids(s) or not clip_ids(s):
            continue
        for row, figures in old["rows"].items():
            if row in s["rows"]:
                continue
            own_run = {
                "run": earlier.get("date"),
                "run_machine": earlier.get("machine"),
                "baseline_seconds_per_clip": old["rows"][old["baseline"]]["seconds_per_clip"],
                "minus_teacher": paired_difference(old, TEACHER, row),  # in its own run
            }
            # a row the earlier run had carried itself keeps the figures of the run that made it
            s["rows"][row] = dict(figures) | {
                k: v for k, v in own_run.items() if figures.get(k) is None
            }
            for mine, theirs in zip(s["transcripts"], old["transcripts"], strict=True):
                mine[row] = theirs[row]
            carried.add(row)
            mem = (earlier.get("peak_rss_mb") or {}).get(row)
            out.setdefault("peak_rss_mb", {})[row] = mem
    return out, sorted(carried)


def with_teacher_differences(deployed: Mapping[str, Any]) -> dict[str, Any]:
    """``deployed`` with each model row's paired WER difference to the teacher served the same
    way in the same run (``minus_teacher``; a carried row keeps its own run's). Pure."""
    out = copy.deepcopy(dict(deployed))
    for s in out.get("sets", {}).values():
        for row, figures in s["rows"].items():
            if row not in (TEACHER, s["baseline"]) and "minus_teacher" not in figures:
                figures["minus_teacher"] = paired_difference(s, TEACHER, row)
    return out


def paired_difference(
    deployed_set: Mapping[str, Any], row_a: str, row_b: str
) -> dict[str, float] | None:
    """WER(b) − WER(a) in points on the set's clips, with its paired-bootstrap 95 % interval
    (clips whose reference normalises to nothing left out, as the corpus WER does). Pure."""
    errors_a, errors_b, words = [], [], []
    for t in deployed_set.get("transcripts") or []:
        if row_a not in t or row_b not in t:
            return None
        ea, w = clip_error_counts(t["language"], t["reference"], t[row_a])
        eb, _ = clip_error_counts(t["language"], t["reference"], t[row_b])
        if w > 0:
            errors_a.append(ea)
            errors_b.append(eb)
            words.append(w)
    diff = paired_bootstrap(errors_a, errors_b, words)
    if diff is None:
        return None
    return {"estimate": 100 * diff.estimate, "low": 100 * diff.low, "high": 100 * diff.high}


def seconds_per_step(variant: Mapping[str, Any]) -> float | None:
    """Training wall time per step (the run's time over its steps, dev evaluations included; a
    run stopped early and recorded without its step count: up to its last evaluation). Pure."""
    steps = variant.get("steps") or variant.get("best_step")
    return variant["train_s"] / steps if steps and variant.get("train_s") else None


def variants_section(
    context: Mapping[str, Any] | None, deployed: Mapping[str, Any] | None
) -> list[str]:
    """``## Which choice gives what`` of the page: one row per variant."""
    if not context or REFERENCE not in context or len(context) < 2:
        return []
    sets = sorted((deployed or {}).get("sets", {}))
    head = "| variant | what changes | step | dev WER % | s / step |"
    rule = "| --- | --- | ---: | ---: | ---: |"
    for name in sets:
        head += f" Δ {name} WER vs teacher | speed-up, {name} |"
        rule += " ---: | ---: |"
    out = [
        "## Which choice gives what: dynamic-context variants",
        "",
        f"Each variant changes one thing of `{REFERENCE}` and trains on the same data with the "
        "same options for the same steps (`bench/results_context.py`). Dev WER: the student "
        "stage's own evaluation of the step's checkpoint (macro mean over languages; the "
        "teacher's on the same dev clips is beside each run in the list above); s / step: the "
        "run's wall time over its steps, evaluations included. Δ: paired WER difference on "
        "the deployed benchmark's test clips to the teacher served the same way in the same "
        "run (ctranslate2 int8, padded), negative is better, with its 95 % interval; speed-up: "
        "against that run's faster-whisper. int8 results differ from machine to machine (a run "
        "on another CPU changed 39 of the 150 asterisk transcripts of faster-whisper itself), so "
        "a variant is compared with the teacher of its own run, never across runs.",
        "",
        head,
        rule,
    ]
    for name, v in sorted(context.items()):
        per_step = seconds_per_step(v)
        line = (
            f"| {name} | {WHAT.get(name, '')} | {v['best_step']} | "
            f"{100 * v['dev_wer_mean']:.1f} | " + (f"{per_step:.1f}" if per_step else "?") + " |"
        )
        for set_name in sets:
            s = deployed["sets"][set_name] if deployed else {}
            f = (s.get("rows") or {}).get(name + BACKEND)
            if f is None:
                line += " — | — |"
                continue
            diff = f.get("minus_teacher")
            line += (
                f" {diff['estimate']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}] |"
                if diff
                else " — |"
            )
            run = f" (earlier run, {f['run']})" if f.get("run") else ""
            line += f" {f.get('speedup_over_baseline', 1.0):.2f}x{run} |"
        out.append(line)
    dev = {name: v["dev_wer"] for name, v in sorted(context.items())}
    langs = sorted({lang for wer in dev.values() for lang in wer})
    out += [
        "",
        "Dev WER % by language:",
        "",
        "| variant | " + " | ".join(langs) + " |",
        "| --- | " + " | ".join("---:" for _ in langs) + " |",
    ]
    for name, wer in dev.items():
        cells = " | ".join(f"{100 * wer[lang]:.1f}" if lang in wer else "—" for lang in langs)
        out.append(f"| {name} | {cells} |")
    return [*out, ""]
