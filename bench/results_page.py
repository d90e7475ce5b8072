"""docs/RESULTS.md from the results run's JSON: tables, plots, paired comparisons with their
intervals, the goals, the depth sweep and the comparison with the published anchors, each
figure with the command that made it. Everything but ``write_page`` is pure (dicts in, markdown
or PNG bytes out): ``figures_of`` computes every figure from the run's files, ``render`` writes
the page from them.

Sections: ``bench.results_tables`` (WER, paired differences, hallucination, stages),
``bench.results_goals``, ``bench.results_depth_page``, ``bench.results_sections`` (corpora,
speed, labelling, anchors); the comparisons: ``bench.results_stats``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import provenance
from bench.results_deployed import deployed_png, deployed_rows, deployed_section
from bench.results_depth_page import default_depth, depth_rows, depth_section, depth_sets
from bench.results_goals import goals, goals_section
from bench.results_plots import bars_png, depth_png, speed_png
from bench.results_sections import (
    anchors,
    corpora_lines,
    corpus_facts,
    labelling_section,
    speed_section,
)
from bench.results_stats import comparisons, held_out_sets, set_figure, transcript_scores
from bench.results_tables import pct, set_section, stage_table
from bench.results_variants import variants_section
from distilflow.export.report import ExportVerification, verification_from_dict
from distilflow.student.report import StudentReport


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def held_out_wer(
    metrics: Mapping[str, Any], baselines: Mapping[str, Any] | None
) -> dict[str, dict[str, float | None]]:
    """model -> language -> WER on ``test`` (baselines only where they were trained)."""
    return set_figure(metrics, baselines, "test", "wer")


def without_clips(baselines: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The baselines' figures without their per-clip transcripts (for results.json)."""
    if baselines is None:
        return None
    return {
        m: {lang: {k: v for k, v in r.items() if k != "clips"} for lang, r in langs.items()}
        for m, langs in baselines.items()
    }


def expert_languages(params: Mapping[str, Any], baselines: Mapping[str, Any] | None) -> list[str]:
    """The languages with experts: the run's ``experts.languages``, else the baselines'."""
    langs = (params.get("experts") or {}).get("languages")
    if langs:
        return sorted(langs)
    return sorted({lang for m in (baselines or {}).values() for lang in m})


def budgets(params: Mapping[str, Any]) -> str:
    """The run's step budgets, from its params."""
    st, ex, ev = params["student"], params["experts"], params["evaluate"]
    layers = f"teacher layers {st['layer_ids']}" if st.get("layer_ids") else (
        f"{st['decoder_layers']} decoder layers")  # fmt: skip
    return (
        f"student {st['max_steps']} steps of {st['batch_size']} clips at lr {st['lr']:g} "
        f"({layers} copied from the teacher, encoder "
        f"{'frozen' if st.get('freeze_encoder', True) else 'trained'}), experts "
        f"{ex['max_steps']} steps per language at lr {ex['lr']:g} ({expert_form(ex)}), "
        f"evaluation capped at "
        f"{ev['max_clips_per_language']} clips a language and set"
    )


def expert_form(ex: Mapping[str, Any]) -> str:
    """What an expert is, from ``experts`` params. Pure."""
    where = "encoder and decoder" if ex.get("encoder") else "decoder"
    if ex.get("form", "lowrank") == "full":
        return f"a copy of each {where} feed-forward block, as published"
    return f"rank-{ex.get('rank', 16)} updates of each {where} feed-forward block"


def figures_of(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure of the page from the run's files (``raw``: ``metrics``, ``baselines``,
    ``transcripts``, ``depth``, ``split``, ``metas``, ``params``, ``filter``, ``speed``,
    ``labelling``, ``stages``, ``decision``, ``dvc_status``, ``provenance``). Pure."""
    metrics, baselines, params = raw["metrics"], raw.get("baselines"), raw["params"]
    scored = metrics["sets"]["test"]["teacher"]["languages"]
    experts = [x for x in expert_languages(params, baselines) if x in scored]
    rows = comparisons(metrics, baselines, raw.get("transcripts") or [], experts)
    split = raw.get("split") or {}
    if "corpora" not in split:  # a run of one corpus, before split.json listed them
        split = {**split, "corpora": {raw.get("corpus", "corpus"): dict(split)}}
    kept = ("provenance", "speed", "labelling", "decision", "dvc_status", "phases")
    out = {k: raw.get(k) for k in kept}
    out |= {
        "split": split,
        "corpora": corpus_facts(split, raw.get("metas") or {}, metrics),
        "budgets": budgets(params),
        "expert_languages": experts,
        "test_wer": held_out_wer(metrics, baselines),
        "metrics_models": metrics["models"],
        "baselines": without_clips(baselines),
        "comparisons": rows,
        "goals": goals(rows, metrics, experts),
        "stages": raw.get("stages") or [],
        "filter": raw.get("filter"),
        "depth": None,
        "context": raw.get("context"),
        "deployed": without_transcripts(raw.get("deployed")),
    }
    depth = raw.get("depth")
    if depth and depth.get("depths"):
        teacher = {s: v for (s, m), v in transcript_scores(raw.get("transcripts") or []).items()
                   if m == "teacher"}  # fmt: skip
        d_rows = depth_rows(depth, metrics, teacher)
        sets = depth_sets(depth)
        out["depth"] = {"rows": d_rows, "sets": sets, "default": default_depth(d_rows, sets),
                        "source": {k: v for k, v in depth.items() if k != "depths"}}  # fmt: skip
    return out


def without_transcripts(deployed: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``bench.deployed``'s figures without its per-clip transcripts (kept in the record)."""
    if not deployed:
        return None
    sets = {
        k: {n: v for n, v in s.items() if n != "transcripts"} for k, s in deployed["sets"].items()
    }
    return {**deployed, "sets": sets}


def project_metas(proj: Path, split: Mapping[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """corpus -> part -> the metadata rows the run copied into the project."""
    out: dict[str, dict[str, list[Any]]] = {}
    for i, (name, counts) in enumerate((split.get("corpora") or {}).items()):
        root = proj / "corpus" if i == 0 else proj / "corpus" / name
        out[name] = {part: read_jsonl(root / part / "metadata.jsonl") for part in counts}
    return out


def run_params(proj: Path) -> dict[str, Any]:
    """The run's params.yaml, else the shipped one with the results run's overrides."""
    import yaml

    from bench.results_project import REPO, results_params

    if (proj / "params.yaml").exists():
        return dict(yaml.safe_load((proj / "params.yaml").read_text(encoding="utf-8")))
    return results_params(REPO / ".cache")


def page_inputs(work: Path, corpus: Path) -> dict[str, Any]:
    """What the page is made from, as found in ``work`` (None where a phase left nothing), with
    the keys ``bench.results_record.merge`` matches a record on."""
    from bench.results_record import data_key, params_key, stamp

    proj = work / "project"
    data = proj / "data"
    split = read_json(work / "split.json") or {}
    status = work / "dvc_status.txt"
    metrics = read_json(data / "evaluate" / "metrics.json")
    params = run_params(proj)
    inputs: dict[str, Any] = {
        "metrics": metrics,
        "transcripts": read_jsonl(data / "evaluate" / "transcripts.jsonl") if metrics else None,
        "split": split,
        "metas": project_metas(proj, split),
        "params": params,
        "filter": read_json(data / "filtered" / "report.json"),
        "decision": read_json(data / "registry" / "decision.json"),
        "dvc_status": status.read_text().strip() if status.exists() else None,
        "student": read_json(data / "student" / "report.json") if metrics else None,
        "export": read_json(data / "export" / "verification.json"),
        "corpus": corpus.name,
        "params_key": params_key(params),
        "data_key": data_key(proj),
    }
    for name in ("baselines", "speed", "labelling", "stages", "depth", "context", "deployed"):
        inputs[name] = read_json(work / f"{name}.json")
    if metrics is None:  # the pipeline ran up to some stage only: its other figures are not whole
        inputs["stages"] = None
    return inputs | {"phases": stamp(inputs)}


def write_page(
    work: Path, corpus: Path, docs: Path, record: Path | None = None, other_labels: bool = False
) -> str:
    """docs/RESULTS.md, docs/results/*.png and docs/bench/results.json from ``work``'s JSON and,
    for the phases ``work`` lacks, ``record``'s (``bench.results_record``), which is then
    rewritten with everything the page was made from."""
    from bench.results_record import merge, read_record, write_record

    fresh = page_inputs(work, corpus)
    inputs, notes = merge(read_record(record) if record else None, fresh, other_labels)
    for note in notes:
        print(f"page: {note}", flush=True)
    if inputs.get("metrics") is None:
        raise FileNotFoundError(
            f"{work}/project/data/evaluate/metrics.json: run the pipeline phase first"
        )
    if record:
        write_record(record, inputs)
    raw = inputs | {"provenance": page_provenance()}
    student = StudentReport.from_dict(raw["student"]) if raw.get("student") else None
    export = verification_from_dict(raw["export"]) if raw.get("export") else None
    metrics = raw["metrics"]
    figures = figures_of(raw)
    (docs / "results").mkdir(parents=True, exist_ok=True)
    wer = figures["test_wer"]
    (docs / "results" / "wer.png").write_bytes(bars_png(wer, sorted(wer["teacher"])))
    if figures["speed"]:
        (docs / "results" / "speed.png").write_bytes(speed_png(figures["speed"], metrics))
    if figures["depth"]:
        depth = figures["depth"]
        (docs / "results" / "depth.png").write_bytes(depth_png(depth["rows"], depth["sets"]))
    if figures.get("deployed"):
        png = deployed_png(deployed_rows(figures["deployed"]))
        (docs / "results" / "deployed.png").write_bytes(png)
    (docs / "bench").mkdir(parents=True, exist_ok=True)
    (docs / "bench" / "results.json").write_text(
        json.dumps(figures, indent=1, ensure_ascii=False, allow_nan=True) + "\n", encoding="utf-8"
    )
    page = render(figures, metrics, student, export)
    (docs / "RESULTS.md").write_text(page, encoding="utf-8")
    return page


def page_provenance() -> dict[str, Any]:
    """Date, machine, and the command that regenerates the whole page (``--phases`` dropped)."""
    prov = provenance("bench.results")
    words = prov["command"].split()
    if "--phases" in words:
        cut = words.index("--phases")
        rest = [w for w in words[cut + 1 :] if w.startswith("--")]
        words = words[:cut] + (words[words.index(rest[0]) :] if rest else [])
    words = [w for w in words if w != "--other-labels"]  # how this page was completed
    return prov | {"command": " ".join(words)}


def render(
    f: Mapping[str, Any],
    metrics: Mapping[str, Any],
    student: StudentReport | None,
    export: ExportVerification | None,
) -> str:
    """The whole page: each section from its own function."""
    out = intro_section(f)
    for set_name in held_out_sets(metrics):
        corpus = next((c["name"] for c in f["corpora"] if c["set"] == set_name), set_name)
        out += set_section(set_name, metrics, f["baselines"], f["comparisons"], corpus)
    out += goals_section(f["goals"])
    depth = f.get("depth")
    if depth:
        out += depth_section(depth["source"], depth["rows"], depth["default"], depth["sets"])
    else:
        out += ["## Decoder depth", "", "(depth phase not run: `--phases depth`)", ""]
    if f["speed"]:
        out += speed_section(f["speed"], metrics)
    if f["labelling"]:
        out += labelling_section(f["labelling"])
    out += deployed_section(f.get("deployed"), f.get("context"))
    out += variants_section(f.get("context"), f.get("deployed"))
    out += run_section(f, student, export)
    out += closing_section(f, metrics, student)
    return "\n".join(out)


def phase_dates(phases: Mapping[str, Mapping[str, str]] | None) -> str:
    """Where the phases ran on different days (a page completed from the record), when each
    ran, at which commit. Pure."""
    if not phases or len({(v["date"], v["commit"]) for v in phases.values()}) < 2:
        return ""
    runs = "; ".join(
        f"{p} on {v['date']} (commit {v['commit']}"
        + (", **on the earlier labels**" if v.get("earlier_labels") else "")
        + ")"
        for p, v in phases.items()
    )
    if not any(v.get("earlier_labels") for v in phases.values()):
        return (
            " Its phases ran apart, on the same data and params "
            f"(`docs/bench/results_record.json`, `bench/results_record.py`): {runs}."
        )
    return (
        " Its phases ran apart, on the same params (`docs/bench/results_record.json`, "
        f"`bench/results_record.py`): {runs}. The phases marked *on the earlier labels* were "
        "made before the clips were relabelled with the log-mel padded as faster-whisper pads "
        "it (2026-12-05, docs/label.md): their models learnt from the earlier labels and were "
        "scored with transformers' padding; the others, on the new labels and padding."
    )


def intro_section(f: Mapping[str, Any]) -> list[str]:
    """Provenance, the corpora and their held-out splits, the budgets, how WER is measured."""
    prov = f["provenance"]
    return [
        "# Results: the whole pipeline on real speech with real whisper-base",
        "",
        f"Generated by `{prov['command']}` on {prov['date']} ({prov['machine']}). Every figure "
        "below comes from that one command (`docs/bench/results.json` holds them all); how each "
        f"was measured is said beside it.{phase_dates(f.get('phases'))} The corpora, and what "
        "the run does with each (a "
        "held-out split is kept out of ingestion: no stage trains, filters or selects on it; it "
        "is scored against the human references):",
        "",
        *corpora_lines(f["corpora"]),
        "",
        f"Budgets (the shipped `params.yaml` with `bench.results_project.OVERRIDES`): "
        f"{f['budgets']}.",
        "",
        "**The shipped student is no longer the one of these tables.** Since 2026-12-04 "
        "`params.yaml` ships the dynamic-context teacher made fast (`dynamic-6-top2`: the "
        "teacher's decoder kept and frozen, the encoder taught to read the clip's own length; "
        'its figures are in "Deployed speed" and "Which choice gives what" below). The '
        "tables here, the depth sweep and the speed section were measured with the earlier "
        "default, 4 decoder layers trained on the padded, frozen encoder, which the results "
        "run pins (`OVERRIDES`) until its pipeline is rerun on the new default (hours on 2 "
        "CPUs).",
        "",
        "![WER per language](results/wer.png)",
        "",
        "## WER on the held-out test sets (%)",
        "",
        "Normalised WER (Whisper's normalisers, accents stripped on both sides), greedy, batch 1, "
        "language forced, the repetition guard on. Experts, fine-tuning and LoRA are trained on "
        "the same student, the same filtered clips of their language and the same step budget "
        "(each method at its own learning rate); fine-tuning and LoRA are trained and scored "
        "(on `test`, their languages only) by `bench/results_baselines.py` with the experts "
        "stage's and the evaluation stage's own code. Bold: the best non-teacher model of a "
        "language. Mean rows: the macro mean over the languages named.",
        "",
    ]


def run_section(
    f: Mapping[str, Any],
    student: StudentReport | None,
    export: ExportVerification | None,
) -> list[str]:
    """The stages' times, the registry's decision, the export's verification."""
    dec = f["decision"] or {}
    verdict = dec.get("decision") or {}
    steps, best = (student.steps, student.student.best_step) if student else ("?", "?")
    out = [
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
    if isinstance(export, ExportVerification):
        out.append(
            f"Export (CTranslate2 int8) against the torch student on {export.clips} dev clips: "
            f"{100 * export.identical_tokens_share:.0f}% identical tokens, WER against torch "
            f"{export.wer_vs_torch:.3f} ({export.wer_vs_torch_settled:.3f} without the "
            f"{export.torch_loop_clips} clips where torch looped)."
        )
    return out


def context_lines(
    f: Mapping[str, Any], metrics: Mapping[str, Any], student: StudentReport | None
) -> list[str]:
    """Measured facts that bear on the anchors: data, filter, encoder share, dev figures."""
    facts = f["corpora"]
    train = sum(c["train"] for c in facts)
    minutes = [c["train_minutes"] for c in facts if c.get("train_minutes") is not None]
    lines = [
        f"- **Data.** {train} clips from {len(facts)} corpora go through the stages"
        + (f" (about {sum(minutes):.0f} min of speech)" if len(minutes) == len(facts) else "")
        + "; Distil-Whisper trained on about 22,000 hours."
    ]
    filt = f.get("filter")
    if filt:
        kept = ", ".join(f"{k} {v['kept']}/{v['input']}" for k, v in filt["by_language"].items())
        lines.append(f"- **Filter.** It kept {filt['kept']} of {filt['input']} clips ({kept}).")
    if student:
        lines.append(
            f"- **Student.** Trained on {student.train_clips} clips for {student.steps} steps "
            f"(best dev checkpoint: step {student.student.best_step})."
        )
    dev = metrics["sets"].get("dev", {})
    if "student" in dev:
        per_lang = dev["student"]["languages"]
        lines.append(
            "- **Dev split** (the filter's kept clips no training step saw): student WER "
            + ", ".join(
                f"{k} {pct(v['wer'])} % ({v['clips']:.0f} clips)" for k, v in per_lang.items()
            )
            + "."
        )
    speed = f.get("speed")
    if speed:
        enc = speed["per_step"]["encoder_s_per_clip"]
        total = speed["end_to_end"]["seconds_per_clip"]["student"]
        lines.append(
            f"- **Encoder.** The student keeps the teacher's encoder: {enc:.3f} s of its "
            f"{total:.3f} s a clip end to end ({100 * enc / total:.0f} %), which no decoder "
            "cut removes. The teacher here is whisper-base (the largest multilingual checkpoint "
            "available offline), not Distil-Whisper's large-v2."
        )
    return lines


def closing_section(
    f: Mapping[str, Any], metrics: Mapping[str, Any], student: StudentReport | None
) -> list[str]:
    """The published anchors, the measured context, how to reproduce the page."""
    prov, speed = f["provenance"], f["speed"]
    langs = sorted(f["test_wer"]["teacher"])
    minutes = sum(s["wall_s"] for s in f["stages"]) / 60
    return [
        "",
        "## Against the published anchors",
        "",
        anchors(f["comparisons"], speed, langs, f["expert_languages"])
        if speed
        else "(speed phase not run)",
        "",
        "Measured context:",
        "",
        *context_lines(f, metrics, student),
        "",
        "## Reproducing",
        "",
        "```bash",
        f"{prov['command']}",
        "```",
        "",
        "(`make results [CORPORA=...]` from a fresh clone: install, then this.) It runs every "
        "phase in `--work` (default `~/.cache/distilflow/results`): the pipeline in a copy of "
        "this project whose params are the shipped `params.yaml` with "
        "`bench.results_project.OVERRIDES` (the step budgets"
        + (f"; its stages took {minutes:.0f} min in this run" if f["stages"] else "")
        + "), then the baselines, the depth sweep, speed, labelling throughput, then this page. "
        "Run again, DVC reproduces only what is stale and every other phase whose inputs "
        "(student, data, code, options) are unchanged is reused, so an unchanged run only "
        "re-renders this page; `--phases speed labelling` re-measures those; a new work folder "
        "retrains everything with the same seeds. WER figures come from seeded CPU training and "
        "greedy decoding, but not bit for bit across machines or thread counts (sums in "
        "another order): a retrained model can land a few points away; speed figures move "
        "with the machine's load. On two CPU cores the whole run outlasts a working day: the "
        "page records what it was made from in `docs/bench/results_record.json`, and a run "
        "of some phases (`--phases pipeline depth page --until filter`: the stages up to the "
        "filter, then the depth sweep) takes the others from it when the data and params are "
        "the same (`bench/results_record.py`); the page then says when each phase ran.",
        "",
    ]
