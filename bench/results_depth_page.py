"""The results page's depth sweep (``WORK/depth.json``, bench/results_depth.py): students of
several decoder depths against the teacher, cost and WER, and the depth the figures support as
the default, chosen by a stated rule. Pure: dicts in, rows and markdown out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.results_stats import Scores, interval_points, macro_compare, point_row, scores_of
from bench.results_tables import count, pct

WITHIN = 0.03  # the rule: within 3 WER points of the teacher, the interval's upper end included
RULE = (
    "the fastest depth (estimated decode seconds a clip) whose mean WER is within "
    f"{100 * WITHIN:.0f} points of the teacher's on every test set, the upper end of its 95 % "
    "interval included (the point difference where there is no interval); if no depth "
    "qualifies, the depth with the lowest mean WER on `test`"
)


def seconds_per_clip(cost: Mapping[str, Any], name: str) -> float | None:
    """The per-clip decode estimate: the shared encoder's seconds a clip plus the teacher's
    tokens a clip at ``name``'s decoder milliseconds a token."""
    ms = cost.get("decoder_ms_per_token", {}).get(name)
    if ms is None or not cost.get("clips"):
        return None
    return float(cost["encoder_s_per_clip"] + cost["tokens"] / cost["clips"] * ms / 1000)


def depth_rows(
    depth: Mapping[str, Any], metrics: Mapping[str, Any], teacher: Mapping[str, Scores]
) -> list[dict[str, Any]]:
    """The teacher's row, then one per depth: parameters, decoder ms a token, seconds a clip,
    speed-up, and per test set the mean WER with its difference from the teacher's."""
    cost = depth.get("cost", {})
    base_s = seconds_per_clip(cost, "teacher")
    rows: list[dict[str, Any]] = [{
        "name": "teacher", "parameters": cost.get("parameters", {}).get("teacher"),
        "ms_per_token": cost.get("decoder_ms_per_token", {}).get("teacher"),
        "seconds": base_s, "speedup": 1.0 if base_s else None, "train_s": None,
        "sets": {s: {"wer": teacher_mean(metrics, s).get("wer"),
                     "loops": teacher_mean(metrics, s).get("loops")} for s in depth_sets(depth)},
    }]  # fmt: skip
    for d, entry in sorted(depth["depths"].items(), key=lambda kv: int(kv[0])):
        name = f"layers-{d}"
        secs = seconds_per_clip(cost, name)
        sets = {}
        for s, figures in entry["sets"].items():
            langs = sorted(figures["languages"])
            clips = entry.get("clips", {}).get(s)
            diff = (
                macro_compare(teacher[s], scores_of(clips), langs) if clips and s in teacher else {}
            )
            diff = diff or point_row(rows[0]["sets"].get(s, {}).get("wer"), figures["mean"]["wer"])
            sets[s] = {"wer": figures["mean"]["wer"], "loops": figures["mean"].get("loops")} | {
                "vs_teacher": diff}  # fmt: skip
        rows.append({
            "name": name, "depth": int(d), "parameters": entry.get("parameters"),
            "ms_per_token": cost.get("decoder_ms_per_token", {}).get(name), "seconds": secs,
            "speedup": base_s / secs if base_s and secs else None,
            "train_s": entry.get("train_s"), "sets": sets,
            "pipeline": int(d) == depth.get("pipeline_depth"),
        })  # fmt: skip
    return rows


def teacher_mean(metrics: Mapping[str, Any], set_name: str) -> Mapping[str, Any]:
    """The teacher's overall figures on ``set_name`` (empty where the evaluation lacks it)."""
    teacher = metrics["sets"].get(set_name, {}).get("teacher", {})
    return dict(teacher.get("mean", {}))


def depth_sets(depth: Mapping[str, Any]) -> list[str]:
    names = {s for entry in depth["depths"].values() for s in entry["sets"]}
    return sorted(names, key=lambda s: (s != "test", s))


def qualifies(row: Mapping[str, Any], sets: Sequence[str]) -> bool:
    """Within :data:`WITHIN` of the teacher on every set, the interval's upper end included."""
    for s in sets:
        diff = row["sets"].get(s, {}).get("vs_teacher") or {}
        worst = diff.get("high") if diff.get("high") is not None else diff.get("delta")
        if worst is None or worst > WITHIN + 1e-12:
            return False
    return True


def default_depth(rows: Sequence[Mapping[str, Any]], sets: Sequence[str]) -> dict[str, Any]:
    """The depth :data:`RULE` picks: ``{"depth", "qualified", "row"}`` (None without depths)."""
    students = [r for r in rows if r["name"] != "teacher"]
    ok = [r for r in students if r["seconds"] is not None and qualifies(r, sets)]
    if ok:
        best = min(ok, key=lambda r: (r["seconds"], r["depth"]))
        return {"depth": best["depth"], "qualified": True, "row": best}
    main = sets[0] if sets else None
    scored = [r for r in students if main and r["sets"].get(main, {}).get("wer") is not None]
    if not scored:
        return {"depth": None, "qualified": False, "row": None}
    best = min(scored, key=lambda r: (r["sets"][main]["wer"], r["depth"]))
    return {"depth": best["depth"], "qualified": False, "row": best}


def depth_table(rows: Sequence[Mapping[str, Any]], sets: Sequence[str]) -> str:
    head = (
        "| decoder layers | parameters | decoder ms a token | decode s a clip (estimate) "
        "| speed-up against the teacher | "
        + " | ".join(f"mean WER `{s}` | Δ against the teacher `{s}` [95 %]" for s in sets)
        + " | loops ("
        + ", ".join(f"`{s}`" for s in sets)
        + ") | training |"
    )
    out = [head, "|" + " ---: |" * (7 + 2 * len(sets))]
    for r in rows:
        name = "teacher" if r["name"] == "teacher" else str(r["depth"])
        name += " (pipeline)" if r.get("pipeline") else ""
        cells = [
            name,
            f"{r['parameters']:,}" if r.get("parameters") else "–",
            "–" if r["ms_per_token"] is None else f"{r['ms_per_token']:.2f}",
            "–" if r["seconds"] is None else f"{r['seconds']:.3f}",
            "–" if r["speedup"] is None else f"{r['speedup']:.2f}x",
        ]
        for s in sets:
            fig = r["sets"].get(s, {})
            diff = fig.get("vs_teacher")
            cells += [pct(fig.get("wer")), interval_points(diff) if diff else "–"]
        cells.append(" / ".join(count(r["sets"].get(s, {}).get("loops")) for s in sets))
        train = r.get("train_s")
        cells.append("–" if r["name"] == "teacher" else "student stage" if train is None
                     else f"{train / 60:.0f} min")  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def choice_text(choice: Mapping[str, Any], sets: Sequence[str], pipeline: Any) -> str:
    """Which depth the figures support as the default, and how it follows from the rule."""
    row = choice["row"]
    if row is None:
        return "No depth was scored: no default follows from the sweep."
    main = sets[0]
    figures = "; ".join(
        f"`{s}` {pct(row['sets'][s]['wer'])} % (Δ {interval_points(row['sets'][s]['vs_teacher'])})"
        for s in sets
        if s in row["sets"]
    )
    speed = "" if row["speedup"] is None else f", {row['speedup']:.2f}x the teacher's speed"
    how = (
        "the fastest depth that meets the rule"
        if choice["qualified"]
        else f"no depth meets the rule; this one has the lowest mean WER on `{main}`"
    )
    same = "matches" if choice["depth"] == pipeline else "differs from"
    return (
        f"Default depth by the rule ({RULE}): **{choice['depth']} decoder layers**, {how}: "
        f"mean WER {figures}{speed}. This {same} the pipeline's student ({pipeline} layers)."
    )


def depth_section(
    source: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    choice: Mapping[str, Any],
    sets: Sequence[str],
) -> list[str]:
    """The depth sweep (``source``: depth.json's ``cost`` and ``pipeline_depth``): how it was
    measured, the plot, the table, the default depth."""
    cost = source.get("cost", {})
    depths = ", ".join(str(r["depth"]) for r in rows if r["name"] != "teacher")
    tokens = cost["tokens"] / cost["clips"] if cost.get("clips") else float("nan")
    return [
        "## Decoder depth",
        "",
        f"Students of {depths} decoder layers, each trained by the student stage's own code on "
        "the same data and step budget (the pipeline's own student for its depth) and scored by "
        "the evaluation's own code on the test sets. Cost: every model decodes exactly the "
        f"teacher's greedy tokens of the same {cost.get('clips', '?')} test clips "
        f"({tokens:.1f} tokens a clip, prompt included), one after another in one process (KV "
        f"cache); the encoder, the same for all, costs {cost.get('encoder_s_per_clip', '?')} s a "
        "clip. Decode estimate: encoder seconds + tokens a clip × decoder milliseconds a token. "
        "Δ: mean WER (macro over the set's languages) of the student minus the teacher's on "
        "the clips both transcribed, in points, with its stratified paired bootstrap 95 % "
        "interval.",
        "",
        "![Decode time against WER per depth](results/depth.png)",
        "",
        depth_table(rows, sets),
        "",
        choice_text(choice, sets, source.get("pipeline_depth")),
        "",
    ]
