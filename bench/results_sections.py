"""Two sections of docs/RESULTS.md (see ``bench.results_page``): size and speed, labelling
throughput. Pure: the results run's dicts in, markdown lines out."""

from __future__ import annotations

from typing import Any

from bench.results_plots import LABELS, MODELS


def speed_section(speed: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
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


def labelling_section(lab: dict[str, Any]) -> list[str]:
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
