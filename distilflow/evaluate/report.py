"""The evaluation stage's files: metrics.json, DVC plot data, two PNGs, report.md.

Every file is written atomically (the ``plots/`` folder as one directory rename).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distilflow.atomic import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from distilflow.evaluate.compare import METHOD, build_comparisons, comparison_markdown
from distilflow.evaluate.explorer import EXPLORER, write_explorer
from distilflow.evaluate.metrics import (
    MEASURES,
    PairResult,
    build_metrics,
    finite,
    report_record,
    stage_lineage,
    transcript_records,
)
from distilflow.evaluate.models import EvalModel
from distilflow.evaluate.sets import EvalSet
from distilflow.models.convert import atomic_dir

WER_PNG = "wer_by_language.png"
SPEED_PNG = "speed_vs_wer.png"
CSV_COLUMNS = ("set", "model", "language", "clips", *MEASURES)


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (set, model, language): the long table DVC plots and the report use. Pure."""
    rows = []
    for set_name, by_model in metrics["sets"].items():
        for model, m in by_model.items():
            for lang, values in m["languages"].items():
                row = {"set": set_name, "model": model, "language": lang}
                row |= {k: values[k] for k in ("clips", *MEASURES)}
                rows.append(row)
    return rows


def csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in finite(list(rows)):
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue().encode("utf-8")


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (no timestamp: the same figure gives the same bytes)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def wer_bars(rows: Sequence[dict[str, Any]]) -> bytes:
    """Grouped bars: normalised WER per language, one bar per model, one panel per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["set"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    value = {(r["set"], r["language"], r["model"]): r["wer"] for r in rows}
    n_bars = max(len(rows), 1)
    width = 0.8 / max(len(models), 1)
    fig, axes = plt.subplots(
        1,
        max(len(sets), 1),
        figsize=(min(14.0, max(5.0, 0.35 * n_bars + 2.0)), 3.6),
        sharey=True,
        squeeze=False,
    )
    for ax, set_name in zip(axes[0], sets, strict=False):
        langs = list(dict.fromkeys(r["language"] for r in rows if r["set"] == set_name))
        for i, model in enumerate(models):
            xs = [g + (i - (len(models) - 1) / 2) * width for g in range(len(langs))]
            ys = [value.get((set_name, lang, model), float("nan")) for lang in langs]
            ax.bar(xs, ys, width=width, label=model, color=f"C{i}")
        ax.set_xticks(range(len(langs)))
        ax.set_xticklabels(langs)
        ax.set_title(set_name)
    axes[0][0].set_ylabel("WER (normalised; CER without spaces)")
    axes[0][-1].legend(fontsize="small")
    return figure_png(fig)


def speed_scatter(models: dict[str, dict[str, Any]]) -> bytes:
    """One point per model: real-time factor (x) against mean WER (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, m in models.items():
        x, y = m["rtf"], m["wer_mean"]
        if x == x and y == y:  # NaN when a model has no score
            ax.scatter([x], [y], s=40)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("real-time factor (batch 1; lower is faster)")
    ax.set_ylabel("mean WER over sets and languages")
    ax.set_title("Speed against WER")
    ax.margins(0.25)
    return figure_png(fig)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def report_markdown(
    metrics: dict[str, Any], record: dict[str, Any], sets: Sequence[EvalSet]
) -> str:
    """report.md: the summary per model, the two plots, a table per set with the paired
    differences under it, how it is measured."""
    lin = record["lineage"]
    lines = [
        f"# Evaluation: {', '.join(metrics['models'])} on {', '.join(s.name for s in sets)}",
        "",
        f"Commit `{lin['git_commit']}`, params `{lin['params_hash']}`, inputs "
        f"`{lin['input_hash']}`, teacher `{lin['teacher_id']}`.",
        "",
        "| model | loaded from | parameters | peak memory (MB) | RTF | tokens/s | mean WER |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in metrics["models"].items():
        ref = record["models"].get(name, {}).get("ref", "")
        lines.append(
            f"| {name} | `{ref}` | {_fmt(m['parameters'])} | {_fmt(m['peak_memory_mb'], 0)} "
            f"| {_fmt(m['rtf'])} | {_fmt(m['tokens_per_s'], 1)} | {_fmt(m['wer_mean'])} |"
        )
    lines += [
        "",
        f"Every clip with its audio, its reference and each model's transcript, word errors "
        f"marked: [{EXPLORER}]({EXPLORER}) (open it in a browser; no server needed).",
        "",
        f"![WER per language](plots/{WER_PNG})",
        "",
        f"![Speed against WER](plots/{SPEED_PNG})",
    ]
    for s in sets:
        counts = ", ".join(f"{k} {v}" for k, v in s.counts().items())
        skipped = "".join(f"; left out: {v} {k}" for k, v in s.skipped.items())
        lines += ["", f"## Set `{s.name}` ({len(s.clips)} clips: {counts}{skipped})", ""]
        lines += [
            "| language | model | clips | WER | orthographic WER | insertion rate "
            "| repeated 5-grams | loops | RTF | tokens/s |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for model, m in metrics["sets"].get(s.name, {}).items():
            for lang, v in [*m["languages"].items(), ("**all**", m["mean"])]:
                lines.append(
                    f"| {lang} | {model} | {int(v['clips'])} | {_fmt(v['wer'])} "
                    f"| {_fmt(v['wer_orthographic'])} | {_fmt(v['insertion_rate'])} "
                    f"| {int(v['repeated_5grams'])} | {int(v['loops'])} | {_fmt(v['rtf'])} "
                    f"| {_fmt(v['tokens_per_s'], 1)} |"
                )
        lines += comparison_markdown(metrics, s.name)
    return "\n".join([*lines, "", *HOW_MEASURED]) + "\n"


HOW_MEASURED = [
    "## How it is measured",
    "",
    "- WER: Whisper's normalisers (English for en, basic otherwise), accents stripped, corpus "
    "level; CER for languages written without spaces. **all** rows: macro mean over languages.",
    "- Orthographic WER: the raw texts, only whitespace collapsed (case and punctuation count).",
    "- Insertion rate: inserted words / reference words (jiwer's alignment, normalised texts).",
    "- Repeated 5-grams: per hypothesis, occurrences of a word 5-gram beyond its first; summed.",
    "- Loops: clips whose transcript the repetition guard cut or that ran into the token budget "
    "(`evaluate.max_new_tokens`).",
    "- Paired differences: WER(model) − WER(baseline) on the clips both transcribed, each model "
    "against the teacher and each but the teacher against the student; the interval is the "
    "2.5 and 97.5 percentiles of 2000 paired bootstrap resamples of the clips (seed 0; both "
    "models on the same resampled clips). An interval holding 0 means the clips cannot tell "
    "the two apart; with a handful of clips the percentile interval is, if anything, too "
    "narrow. Without loops: the same on the clips neither model looped on.",
    "- RTF: seconds of log-mel + encoder + greedy decoding / seconds of audio, batch 1, after "
    "one warm-up; tokens/s: generated text tokens / those seconds. Models run one at a time.",
    "- Peak memory: a fresh process loads the model and transcribes one clip; on CPU its peak "
    "resident set during that work (Linux VmHWM, reset just before) minus its resident set "
    "before loading; on CUDA torch.cuda.max_memory_allocated.",
]


def write_evaluation(
    out_dir: Path,
    models: Sequence[EvalModel],
    sets: Sequence[EvalSet],
    results: Sequence[PairResult],
    memory_mb: dict[str, float],
    params_hash: str,
    explorer_audio_mb: float = 64.0,
) -> tuple[dict[str, Any], str]:
    """Write every output of the stage; returns (metrics, report markdown)."""
    out = Path(out_dir)
    metrics = build_metrics(results, memory_mb) | {"comparisons": build_comparisons(results)}
    record = report_record(models, sets, results, stage_lineage(params_hash, sets, results))
    record["comparisons"] = METHOD
    rows = metric_rows(metrics)
    plots = out / "plots"
    if plots.exists():
        shutil.rmtree(plots)
    with atomic_dir(plots) as tmp:
        (tmp / "metrics_by_language.csv").write_bytes(csv_bytes(rows))
        summary = [{"model": k} | v for k, v in metrics["models"].items()]
        (tmp / "models.json").write_text(json.dumps(finite(summary), indent=2) + "\n", "utf-8")
        (tmp / WER_PNG).write_bytes(wer_bars(rows))
        (tmp / SPEED_PNG).write_bytes(speed_scatter(metrics["models"]))
    markdown = report_markdown(finite(metrics), record, sets)
    atomic_write_jsonl(out / "transcripts.jsonl", transcript_records(results))
    write_explorer(out, sets, results, explorer_audio_mb)
    atomic_write_json(out / "report.json", record)
    atomic_write_bytes(out / "report.md", markdown.encode("utf-8"))
    atomic_write_json(out / "metrics.json", finite(metrics))
    return finite(metrics), markdown
