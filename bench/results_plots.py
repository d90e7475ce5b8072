"""The results page's figures: WER per language, speed against WER, decoder depth against WER.
Pure: PNG bytes."""

from __future__ import annotations

from typing import Any

from distilflow.evaluate.report import figure_png

MODELS = ("teacher", "student", "experts", "finetune", "lora")
LABELS = {
    "teacher": "teacher (whisper-base)",
    "student": "student",
    "experts": "student + experts",
    "finetune": "student + fine-tuning",
    "lora": "student + LoRA",
}
ANCHOR_SPEED = 5.8  # Distil-Whisper: distil-large-v2 against large-v2
ANCHOR_WER_POINTS = 1.0  # Distil-Whisper: within 1% WER out of domain


def bars_png(wer: dict[str, dict[str, float]], languages: list[str]) -> bytes:
    """Grouped bars of test WER per language, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in MODELS if m in wer]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, m in enumerate(models):
        xs = [g + (i - (len(models) - 1) / 2) * width for g in range(len(languages))]
        ys = [100 * wer[m].get(lang, float("nan")) for lang in languages]
        ax.bar(xs, ys, width=width, label=LABELS[m], color=f"C{i}")
    ax.set_xticks(range(len(languages)))
    ax.set_xticklabels(languages)
    ax.set_ylabel("WER % (held-out test split)")
    ax.set_title("WER per language, clips no training step saw")
    ax.legend(fontsize="small", ncol=2)
    return figure_png(fig)


def speed_png(speed: dict[str, Any], metrics: dict[str, Any]) -> bytes:
    """Speed against the teacher (left) and the WER each model pays for it (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e2e = speed["end_to_end"]["speedup_vs_teacher"]
    names = ["student\nend to end", "student\nper step", "speculative", "paper\n(large-v2)"]
    values = [
        e2e["student"],
        speed["per_step"]["decoder_speedup"],
        e2e["speculative"],
        ANCHOR_SPEED,
    ]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax.bar(names, values, color=["C1", "C1", "C2", "0.7"])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("speed-up against the teacher")
    ax.set_title("Speed (batch 1, CPU)")
    for name, m in metrics["models"].items():
        color = f"C{MODELS.index(name)}" if name in MODELS else "k"
        ax2.scatter([m["rtf"]], [100 * m["wer_mean"]], s=40, color=color)
        ax2.annotate(
            name, (m["rtf"], 100 * m["wer_mean"]), xytext=(5, 4), textcoords="offset points"
        )
    ax2.set_xlabel("real-time factor (lower is faster)")
    ax2.set_ylabel("mean WER % (dev + test)")
    ax2.set_title("Speed against WER")
    ax2.margins(0.3)
    return figure_png(fig)


def depth_png(rows: list[dict[str, Any]], sets: list[str]) -> bytes:
    """Estimated decode seconds a clip against mean WER: one point per depth (labelled), the
    teacher a star; one colour per test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, s in enumerate(sets):
        pts = [
            (r["seconds"], 100 * r["sets"][s]["wer"], r)
            for r in rows
            if r["seconds"] is not None and r["sets"].get(s, {}).get("wer") is not None
        ]
        students = [p for p in pts if p[2]["name"] != "teacher"]
        ax.plot([p[0] for p in students], [p[1] for p in students], "o-", color=f"C{i}",
                label=f"students, {s}")  # fmt: skip
        for x, y, r in students:
            ax.annotate(f"{r['depth']} layers", (x, y), xytext=(5, 4), textcoords="offset points")
        for x, y, _ in (p for p in pts if p[2]["name"] == "teacher"):
            ax.scatter([x], [y], marker="*", s=160, color=f"C{i}", edgecolors="k", zorder=3,
                       label=f"teacher, {s}")  # fmt: skip
            ax.annotate("teacher", (x, y), xytext=(5, -12), textcoords="offset points")
    ax.set_xlabel("decode seconds a clip (estimate: encoder + tokens × ms a token)")
    ax.set_ylabel("mean WER % (macro over languages)")
    ax.set_title("Decoder depth: cost against WER")
    ax.margins(0.15)
    ax.legend(fontsize="small")
    return figure_png(fig)
