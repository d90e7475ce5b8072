"""docs/RESULTS.md from the results run's JSON: tables, plots and the comparison with the
published anchors, each figure with the command that made it. Everything but ``write_page``
is pure (dicts in, markdown or PNG bytes out)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.common import provenance
from bench.results_plots import (
    ANCHOR_SPEED,
    ANCHOR_WER_POINTS,
    LABELS,
    MODELS,
    bars_png,
    speed_png,
)
from bench.results_sections import labelling_section, speed_section
from distilflow.export.report import ExportSkipped, ExportVerification, read_verification
from distilflow.student.report import StudentReport


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def held_out_wer(
    metrics: dict[str, Any], baselines: dict[str, Any] | None
) -> dict[str, dict[str, float]]:
    """model -> language -> WER on the test split (baselines only where they were trained)."""
    out: dict[str, dict[str, float]] = {}
    for model, pair in metrics["sets"]["test"].items():
        out[model] = {lang: m["wer"] for lang, m in pair["languages"].items()}
    for method, langs in (baselines or {}).items():
        out[method] = {lang: r["test"]["wer"] for lang, r in langs.items()}
    return out


def mean(values: list[float]) -> float:
    ok = [v for v in values if v is not None and not math.isnan(v)]
    return sum(ok) / len(ok) if ok else float("nan")


def pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def wer_table(wer: dict[str, dict[str, float]], languages: list[str]) -> str:
    models = [m for m in MODELS if m in wer]
    head = "| language | " + " | ".join(LABELS[m] for m in models) + " |"
    rows = [head, "|" + " --- |" * (len(models) + 1)]
    for lang in languages:
        cells = []
        best = min(
            (wer[m][lang] for m in models if m != "teacher" and lang in wer[m]), default=None
        )
        for m in models:
            v = wer[m].get(lang)
            text = pct(v)
            cells.append(f"**{text}**" if v is not None and v == best and m != "teacher" else text)
        rows.append(f"| {lang} | " + " | ".join(cells) + " |")
    expert_langs = [lang for lang in languages if all(lang in wer[m] for m in models)]
    rows.append(
        f"| mean ({', '.join(expert_langs)}) | "
        + " | ".join(pct(mean([wer[m][x] for x in expert_langs])) for m in models)
        + " |"
    )
    return "\n".join(rows)


def hallucination_table(metrics: dict[str, Any], baselines: dict[str, Any] | None) -> str:
    rows = [
        "| model | insertion rate | repeated 5-grams | clips |",
        "| --- | --- | --- | --- |",
    ]
    for model in (m for m in MODELS if m in metrics["sets"]["test"]):
        m = metrics["sets"]["test"][model]["mean"]
        rows.append(
            f"| {LABELS.get(model, model)} | {pct(m['insertion_rate'])} % | "
            f"{m['repeated_5grams']:.0f} | {m['clips']:.0f} |"
        )
    for method, langs in (baselines or {}).items():
        ins = mean([r["test"]["insertion_rate"] for r in langs.values()])
        rep = sum(r["test"]["repeated_5grams"] for r in langs.values())
        clips = sum(r["test"]["clips"] for r in langs.values())
        rows.append(
            f"| {LABELS[method]} (es, fr, it, ru) | {pct(ins)} % | {rep:.0f} | {clips:.0f} |"
        )
    return "\n".join(rows)


def stage_table(stages: list[dict[str, Any]]) -> str:
    rows = ["| stage | wall time | peak memory (RSS) |", "| --- | --- | --- |"]
    for s in stages:
        minutes, seconds = divmod(round(s["wall_s"]), 60)
        rows.append(
            f"| {s['stage']} | {minutes} min {seconds:02d} s | {s['peak_rss_mb']:.0f} MiB |"
        )
    total = sum(s["wall_s"] for s in stages)
    rows.append(f"| **all** | **{int(total // 60)} min {int(total % 60):02d} s** | |")
    return "\n".join(rows)


def anchors(wer: dict[str, dict[str, float]], speed: dict[str, Any], langs: list[str]) -> str:
    """The published anchors against our figures, stated plainly."""
    gap = 100 * (
        mean([wer["student"][x] for x in langs]) - mean([wer["teacher"][x] for x in langs])
    )
    e2e = speed["end_to_end"]["speedup_vs_teacher"]["student"]
    lines = [
        f"- **Distil-Whisper** (within {ANCHOR_WER_POINTS:.0f}% WER of the teacher at "
        f"{ANCHOR_SPEED}x): the student is **{gap:+.1f} WER points** from the teacher (macro mean "
        f"over {', '.join(langs)}) at **{e2e:.2f}x** end to end, "
        f"{speed['per_step']['decoder_speedup']:.2f}x per decoding step. "
        + ("Met." if gap <= ANCHOR_WER_POINTS and e2e >= ANCHOR_SPEED else "**Not met.**"),
    ]
    trio = ("experts", "finetune", "lora")
    expert_langs = [x for x in langs if all(x in wer.get(m, {}) for m in trio)]
    if expert_langs:
        e, f, lo, st = (mean([wer[m][x] for x in expert_langs]) for m in (*trio, "student"))
        wins = sum(
            wer["experts"][x] <= min(wer["finetune"][x], wer["lora"][x]) for x in expert_langs
        )
        lifted = sum(wer["experts"][x] < wer["student"][x] for x in expert_langs)
        beats = e <= min(f, lo)
        verdict = (
            "Met."
            if beats and e < st
            else "**Partly met**: they beat the baselines, not the student alone."
            if beats
            else "**Not met.**"
        )
        lines.append(
            f"- **DistilWhisper** (experts lift under-performing languages and beat fine-tuning "
            f"and LoRA): mean WER over {', '.join(expert_langs)}: student alone {pct(st)}, "
            f"experts {pct(e)}, fine-tuning {pct(f)}, LoRA {pct(lo)}; experts best of the three "
            f"or tied in {wins} of {len(expert_langs)} languages, better than the student alone "
            f"in {lifted}. {verdict}"
        )
    share = speed["end_to_end"]["speculative_identical_share"]
    spec = speed["end_to_end"]["speedup_vs_teacher"]["speculative"]
    lines.append(
        f"- **Speculative decoding** (paper: 2x with exactly the teacher's output): "
        f"{spec:.2f}x, identical output on {100 * share:.0f}% of the clips. "
        + (
            "Met."
            if spec >= 2.0 and share == 1.0
            else "**Speed not met**; exactness " + ("met." if share == 1.0 else "not met.")
        )
    )
    return "\n".join(lines)


WHY = """Why, as far as we can tell:

- **The teacher is small.** Distil-Whisper distils large-v2 (1.55 B parameters, 32 decoder
  layers) into 2 decoder layers, so the decoder is most of the cost it removes. whisper-base (the
  largest multilingual checkpoint available offline) has 6 decoder layers and an encoder that costs
  about 0.6 s a 30 s window on these cores whatever the clip's length: keeping the teacher's
  encoder, as the method does, leaves most of the time in place. The per-step figure shows what
  cutting decoder layers can give here; issue 9 (dynamic audio context) attacks the encoder.
- **The data and compute are tiny.** The paper trains on about 22,000 hours for tens of thousands
  of steps on GPUs; this run trains on the 850 prompts of the training split (about 32 minutes of
  speech, one speaker a language; the filter keeps about 60% of them) for the step budgets above
  on 2 CPU cores. The student has not converged (its dev WER still moved by several points
  between its checkpoints) and still loops on some clips (its Russian dev WER is above 100%).
- **The experts' published setting is out of reach here.** DistilWhisper puts experts on the
  encoder and decoder of whisper-small with large-v2 as teacher and trains on far more speech a
  language; here they sit on the decoder only (the encoder's would cost about 10x the CPU time,
  `experts.encoder: true`), the teacher is 1.3x the student, and each language has a few hundred
  training clips. A 30-clip test set moves a language's WER by several points per clip.
- **Selection on small dev sets is noise.** The release keeps a language's experts where they
  beat the student on dev (15-21 filtered clips a language); the larger, unfiltered test split
  can reverse that (compare `dev_wer` in the run's `data/experts/<lang>/report.json` with the
  table above). The teacher's dev WER is far below its test WER because the dev split holds only
  clips whose labels passed the WER filter.
- **Speculative decoding needs a cheap draft and a costly verifier.** Here the verifier is
  whisper-base, whose pass over a few draft tokens costs about one greedy step, and the draft
  shares the whole encoder; every rejected draft token is paid twice. The output is exactly the
  teacher's, as the method guarantees."""


def write_page(work: Path, corpus: Path, docs: Path) -> str:
    """docs/RESULTS.md, docs/results/*.png and docs/bench/results.json from ``work``'s JSON."""
    proj = work / "project"
    data = proj / "data"
    metrics = read_json(data / "evaluate" / "metrics.json")
    if metrics is None:
        raise FileNotFoundError(f"{data}/evaluate/metrics.json: run the pipeline phase first")
    baselines = read_json(work / "baselines.json")
    speed = read_json(work / "speed.json")
    labelling = read_json(work / "labelling.json")
    stages = read_json(work / "stages.json") or []
    split = read_json(work / "split.json") or {}
    decision = read_json(data / "registry" / "decision.json")
    student_file = data / "student" / "report.json"
    student = StudentReport.read(student_file) if student_file.exists() else None
    export_file = data / "export" / "verification.json"
    export = read_verification(export_file) if export_file.exists() else None
    wer = held_out_wer(metrics, baselines)
    langs = sorted(wer["teacher"])
    prov = provenance("bench.results")
    words = prov["command"].split()  # the page shows the command that regenerates all of it
    if "--phases" in words:
        cut = words.index("--phases")
        rest = [w for w in words[cut + 1 :] if w.startswith("--")]
        words = words[:cut] + (words[words.index(rest[0]) :] if rest else [])
    figures = {
        "provenance": prov | {"command": " ".join(words)},
        "split": split,
        "test_wer": wer,
        "metrics_models": metrics["models"],
        "baselines": baselines,
        "speed": speed,
        "labelling": labelling,
        "stages": stages,
        "decision": decision,
        "dvc_status": (work / "dvc_status.txt").read_text().strip()
        if (work / "dvc_status.txt").exists()
        else None,
    }
    (docs / "results").mkdir(parents=True, exist_ok=True)
    (docs / "results" / "wer.png").write_bytes(bars_png(wer, langs))
    if speed:
        (docs / "results" / "speed.png").write_bytes(speed_png(speed, metrics))
    (docs / "bench").mkdir(parents=True, exist_ok=True)
    (docs / "bench" / "results.json").write_text(
        json.dumps(figures, indent=1, ensure_ascii=False, allow_nan=True) + "\n", encoding="utf-8"
    )
    page = render(figures, metrics, student, export, corpus)
    (docs / "RESULTS.md").write_text(page, encoding="utf-8")
    return page


def budgets() -> str:
    from bench.results_project import OVERRIDES

    st, ex = OVERRIDES["student"], OVERRIDES["experts"]
    return (
        f"student {st['max_steps']} steps of {st['batch_size']} clips at lr {st['lr']:g} "
        f"(2 decoder layers copied from the teacher, encoder frozen), experts {ex['max_steps']} "
        f"steps per language, evaluation capped at "
        f"{OVERRIDES['evaluate']['max_clips_per_language']} clips a language and set"
    )


def render(
    f: dict[str, Any],
    metrics: dict[str, Any],
    student: StudentReport | None,
    export: Any,
    corpus: Path,
) -> str:
    """The whole page: each section from its own function."""
    wer, speed = f["test_wer"], f["speed"]
    langs = sorted(wer["teacher"])
    out = intro_section(f, metrics, corpus, langs)
    if speed:
        out += speed_section(speed, metrics)
    if f["labelling"]:
        out += labelling_section(f["labelling"])
    out += run_section(f, student, export)
    out += closing_section(f["provenance"], wer, speed, langs)
    return "\n".join(out)


def intro_section(
    f: dict[str, Any], metrics: dict[str, Any], corpus: Path, langs: list[str]
) -> list[str]:
    """Provenance, the corpus and its held-out split, the WER and hallucination tables."""
    wer, prov = f["test_wer"], f["provenance"]
    test_clips = {
        lang: int(m["clips"]) for lang, m in metrics["sets"]["test"]["teacher"]["languages"].items()
    }
    return [
        "# Results: the whole pipeline on real speech with real whisper-base",
        "",
        f"Generated by `{prov['command']}` on {prov['date']} ({prov['machine']}). Every figure "
        "below comes from that one command (`docs/bench/results.json` holds them all); how each "
        "was measured is said beside it. The corpus: "
        f"`{corpus.name}`, {sum(f['split'].values())} real studio prompts in {', '.join(langs)} "
        f"(one speaker a language). Held out before ingestion: **{f['split'].get('test')} clips** "
        f"({', '.join(f'{k} {v}' for k, v in test_clips.items())}) that no stage trains, filters "
        "or selects on, scored against the human references; the other "
        f"{f['split'].get('train')} clips go through every stage.",
        "",
        f"Budgets (the shipped `params.yaml` with `bench.results_project.OVERRIDES`): {budgets()}.",
        "",
        "![WER per language](results/wer.png)",
        "",
        "## WER on the held-out test split (%)",
        "",
        "Normalised WER (Whisper's normalisers, accents stripped on both sides), greedy, batch 1, "
        "language forced. Experts, fine-tuning and LoRA are trained on the same student, the same "
        "filtered clips of their language and the same step budget; fine-tuning and LoRA are "
        "trained and scored by `bench/results_baselines.py` with the experts stage's and the "
        "evaluation stage's own code. Bold: the best non-teacher model of a language.",
        "",
        wer_table(wer, langs),
        "",
        "Hallucination measures on the test split (insertions per reference word; repeated "
        "5-grams, summed over clips: repetition loops):",
        "",
        hallucination_table(metrics, f["baselines"]),
        "",
    ]


def run_section(
    f: dict[str, Any],
    student: StudentReport | None,
    export: ExportVerification | ExportSkipped | None,
) -> list[str]:
    """The stages' times, the registry's decision, the export's verification."""
    out: list[str] = []
    dec = f["decision"] or {}
    verdict = dec.get("decision") or {}
    steps, best = (student.steps, student.student.best_step) if student else ("?", "?")
    out += [
        "## The run: stages, registry, export",
        "",
        "Each DVC stage of the pipeline, run one after the other (`dvc repro --single-item`), wall "
        "time including the stage's Prefect start-up, and the peak resident memory of its largest "
        "process:",
        "",
        stage_table(f["stages"]),
        "",
        f"`dvc status` in the run's project afterwards: {f.get('dvc_status') or '(not recorded)'}",
        "",
        f"Student: {steps} steps, best dev checkpoint at step {best}. "
        f"Registry: version {dec.get('version', '?')} of "
        f"`{dec.get('model_name', '?')}`, aliases {dec.get('aliases', [])}, gate "
        f"**{verdict.get('verdict', '?')}**: {'; '.join(verdict.get('reasons', []))}.",
    ]
    if isinstance(export, ExportVerification):  # not for a skipped (dynamic-context) export
        out.append(
            f"Export (CTranslate2 int8) against the torch student on {export.clips} dev clips: "
            f"{100 * export.identical_tokens_share:.0f}% identical tokens, WER against torch "
            f"{export.wer_vs_torch:.3f} ({export.wer_vs_torch_settled:.3f} without the "
            f"{export.torch_loop_clips} clips where torch looped)."
        )
    return out


def closing_section(
    prov: dict[str, Any], wer: dict[str, dict[str, float]], speed: Any, langs: list[str]
) -> list[str]:
    """The published anchors, why we miss them, how to reproduce the page."""
    return [
        "",
        "## Against the published anchors",
        "",
        anchors(wer, speed, langs) if speed else "(speed phase not run)",
        "",
        WHY,
        "",
        "## Reproducing",
        "",
        "```bash",
        f"{prov['command']}",
        "```",
        "",
        "(`make results CORPUS=...` from a fresh clone: install, then this.) It runs every "
        "phase (about an hour and a half on 2 CPU cores) in `--work` (default "
        "`~/.cache/distilflow/results`): the pipeline in a copy of this project whose params are "
        "the shipped `params.yaml` with `bench.results_project.OVERRIDES` (the step budgets), "
        "then the baselines, speed, labelling throughput, then this page. Run again, DVC "
        "reproduces only what is stale and every other phase whose inputs (student, data, code, "
        "options) are unchanged is reused, so an unchanged run only re-renders this page; "
        "`--phases speed labelling` re-measures those; a new work folder retrains everything "
        "with the same seeds. WER figures come from seeded CPU training and greedy decoding; "
        "speed figures move with the machine's load.",
        "",
    ]
