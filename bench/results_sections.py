"""Sections of docs/RESULTS.md (see ``bench.results_page``): the corpora, size and speed,
labelling throughput, the published anchors. Pure: the results run's dicts in, markdown out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.results_plots import ANCHOR_SPEED, ANCHOR_WER_POINTS, LABELS, MODELS
from bench.results_stats import interval_points, row_over, verdict


def speed_section(speed: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """Parameters, the side-by-side speed run, the evaluation's speed and memory."""
    out: list[str] = []
    e2e = speed["end_to_end"]
    ps = speed["per_step"]
    out += [
        "## Size and speed",
        "",
        "![Speed](results/speed.png)",
        "",
        f"Parameters: teacher {speed['parameters']['teacher']:,}, student "
        f"{speed['parameters']['student']:,} (**{speed['parameters']['ratio']:.2f}x**, "
        f"{100 * (1 - speed['parameters']['ratio']):.0f}% fewer). With one language's experts: "
        f"{metrics['models'].get('experts', {}).get('parameters', 0):,}.",
        "",
        f"Side by side in one process on {speed['clips']} test clips (fp32, batch 1, greedy, "
        "language forced):",
        "",
        "| | teacher | student | speculative (student drafts, teacher verifies) |",
        "| --- | --- | --- | --- |",
        "| seconds a clip, end to end | "
        + " | ".join(
            f"{e2e['seconds_per_clip'][k]:.3f}" for k in ("teacher", "student", "speculative")
        )
        + " |",
        "| speed-up against the teacher | "
        + " | ".join(
            f"{e2e['speedup_vs_teacher'][k]:.2f}x" for k in ("teacher", "student", "speculative")
        )
        + " |",
        "",
        f"Speculative decoding gave exactly the teacher's tokens on "
        f"**{100 * e2e['speculative_identical_share']:.0f}%** of the clips. "
        f"Per decoding step (KV cache, exactly the teacher's tokens for both, {ps['tokens']} "
        f"tokens): teacher {ps['teacher_decoder_ms_per_token']} ms, student "
        f"{ps['student_decoder_ms_per_token']} ms a token (**{ps['decoder_speedup']:.2f}x**); "
        f"the shared encoder costs {ps['encoder_s_per_clip']:.3f} s a clip for both. "
        "End-to-end times include each model's own transcript length: a student that loops "
        "decodes more tokens.",
        "",
        "From the evaluation stage (every test and dev clip; decode time per second of "
        "audio, generated tokens per second, peak memory of a fresh process transcribing "
        "one clip):",
        "",
        "| model | parameters | real-time factor | tokens/s | peak memory |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in (n for n in MODELS if n in metrics["models"]):
        m = metrics["models"][name]
        out.append(
            f"| {LABELS.get(name, name)} | {m['parameters']:,} | {m['rtf']:.3f} | "
            f"{m['tokens_per_s']:.1f} | {m['peak_memory_mb']:.0f} MiB |"
        )
    out.append("")
    return out


def labelling_section(lab: Mapping[str, Any]) -> list[str]:
    """The label stage's throughput against transformers' ASR pipeline."""
    out: list[str] = []
    cps, up = lab["clips_per_s"], lab["speedup_vs_baseline"]
    out += [
        "## Labelling throughput",
        "",
        f"The label stage against transformers' ASR `pipeline` (one clip at a time), the same "
        f"{lab['clips']} clips and teacher, one after the other in one process:",
        "",
        "| run | clips/s | against the baseline |",
        "| --- | --- | --- |",
        f"| baseline: transformers ASR pipeline | {cps['baseline_pipeline']:.2f} | 1.00x |",
        f"| label stage, transformers backend (length-sorted batches of 8) | "
        f"{cps['stage_transformers']:.2f} | **{up['stage_transformers']:.2f}x** |",
        f"| label stage, CTranslate2 backend | {cps['stage_ctranslate2']:.2f} | "
        f"**{up['stage_ctranslate2']:.2f}x** |",
        "",
        f"CTranslate2 and transformers labels identical on "
        f"{100 * lab['identical_text_share_ct2_vs_transformers']:.0f}% of the clips.",
        "",
    ]
    return out


def corpus_facts(
    split: Mapping[str, Any],
    metas: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    metrics: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Each corpus of the run (``split.json``'s ``corpora``, the main one first): its clips,
    transcribed or not, its test set and its clips a language, and from its rows in the project
    (``metas``: corpus -> part -> metadata rows) its languages, speakers and minutes."""
    out = []
    for i, (name, counts) in enumerate(split.get("corpora", {}).items()):
        rows = [r for part in metas.get(name, {}).values() for r in part]
        set_name = None if "test" not in counts else "test" if i == 0 else f"test-{name}"
        scored = metrics["sets"].get(set_name, {}).get("teacher", {}).get("languages", {})
        durations = [r.get("duration_s") for r in rows]
        train = [r.get("duration_s") for r in metas.get(name, {}).get("train", [])]
        out.append({
            "name": name, "set": set_name, "train": counts.get("train", 0),
            "test": counts.get("test", 0), "transcribed": "test" in counts,
            "languages": sorted({str(r["language"]) for r in rows}) or sorted(scored),
            "speakers": len({r["speaker"] for r in rows if r.get("speaker")}) or None,
            "minutes": sum(float(d) for d in durations if d is not None) / 60
            if rows and None not in durations else None,
            "train_minutes": sum(float(d) for d in train if d is not None) / 60
            if train and None not in train else None,
            "test_clips": {lang: int(m["clips"]) for lang, m in scored.items()},
        })  # fmt: skip
    return out


def corpora_lines(facts: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per corpus: what it holds and what the run does with it."""
    out = []
    for c in facts:
        size = ", ".join(
            x
            for x in (
                f"{c['speakers']} speaker{'s' if c['speakers'] != 1 else ''}"
                if c["speakers"]
                else "",
                f"{c['minutes']:.0f} min of audio" if c["minutes"] is not None else "",
            )
            if x
        )
        head = (
            f"- `{c['name']}`: {c['train'] + c['test']} clips "
            f"{'with' if c['transcribed'] else 'without'} transcripts in "
            f"{', '.join(c['languages'])}" + (f" ({size})" if size else "")
        )
        if c["set"]:
            per_lang = ", ".join(f"{k} {v}" for k, v in c["test_clips"].items())
            out.append(
                f"{head}; **{c['test']} held out** as evaluation set `{c['set']}` "
                f"(scored: {per_lang or 'none'}), the other {c['train']} go through every stage."
            )
        else:
            out.append(
                f"{head}: all {c['train']} are training audio, labelled by the teacher and "
                "judged by the filter on the teacher's confidence."
            )
    return out


def anchors(
    rows: Sequence[Mapping[str, Any]],
    speed: Mapping[str, Any],
    langs: list[str],
    experts: list[str],
) -> str:
    """The published anchors against our figures, each difference with its interval."""
    gap = row_over(rows, "test", "teacher", "student", langs) or {}
    delta = gap.get("delta")
    e2e = speed["end_to_end"]["speedup_vs_teacher"]["student"]
    met = delta is not None and delta <= ANCHOR_WER_POINTS / 100 and e2e >= ANCHOR_SPEED
    lines = [
        f"- **Distil-Whisper** (within {ANCHOR_WER_POINTS:.0f}% WER of the teacher at "
        f"{ANCHOR_SPEED}x): the student is **{interval_points(gap)} WER points** from the "
        f"teacher (macro mean over {', '.join(langs)}) at **{e2e:.2f}x** end to end, "
        f"{speed['per_step']['decoder_speedup']:.2f}x per decoding step. "
        + ("Met." if met else "**Not met.**"),
    ]
    distil = distilwhisper_line(rows, experts)
    lines += [distil] if distil else []
    share = speed["end_to_end"]["speculative_identical_share"]
    spec = speed["end_to_end"]["speedup_vs_teacher"]["speculative"]
    lines.append(
        f"- **Speculative decoding** (paper: 2x with exactly the teacher's output): "
        f"{spec:.2f}x, identical output on {100 * share:.0f}% of the clips. "
        + ("Met." if spec >= 2.0 and share == 1.0 else "**Speed not met**; exactness "
           + ("met." if share == 1.0 else "not met."))
    )  # fmt: skip
    return "\n".join(lines)


def distilwhisper_line(rows: Sequence[Mapping[str, Any]], experts: list[str]) -> str | None:
    """The experts against the student alone, fine-tuning and LoRA (mean over the expert
    languages): better only where the interval lies below 0."""
    names = {"student": "the student alone", "finetune": "fine-tuning", "lora": "LoRA"}
    reads = {}
    for rival in names:
        r = row_over(rows, "test", rival, "experts", experts)
        if r is not None:
            reads[rival] = (verdict(r), interval_points(r))
    if not {"finetune", "lora"} <= set(reads):
        return None
    shown = [m for m, (v, _) in reads.items() if v == "better"]
    unsure = [m for m, (v, _) in reads.items() if v == "better (no interval)"]
    if len(shown) == len(reads):
        text = "Met."
    elif {"finetune", "lora"} <= set(shown):
        text = "**Partly met**: better than the baselines, not than the student alone."
    elif unsure and len(shown) + len(unsure) == len(reads):
        text = (
            "**Not shown**: better by the point figure only against "
            + ", ".join(names[m] for m in unsure)
            + " (no interval)."
        )
    else:
        text = "**Not met.**"
    return (
        "- **DistilWhisper** (experts lift under-performing languages and beat fine-tuning "
        f"and LoRA): experts minus each, mean over {', '.join(experts)}, WER points [95 %]: "
        + "; ".join(f"against {names[m]} {t}: {v}" for m, (v, t) in reads.items())
        + f". {text}"
    )
