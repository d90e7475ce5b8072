"""Several models on the same clips, with paired bootstrap intervals: does a recipe beat another?

    python -m bench.compare --model teacher=pypi:whisper-base --model old=DIR --model new=DIR \\
        --set held-out=../shared/data/asterisk-dev --exclude demo/asterisk/metadata.jsonl \\
        --set festvox-ru=../shared/data/festvox-ru --dev PROJECT --cap 40 --baseline old \\
        --out docs/bench/recipe.json

Every model is decoded by the evaluation stage's own code (greedy, batch 1, language forced,
the loop guard of the project's params) on every set: audiofolders (``--set name=folder``,
their clips listed in an ``--exclude`` metadata.jsonl left out, then ``--cap`` clips a language
in a seeded order) and, with ``--dev PROJECT``, that project's dev split (its filter outputs and
``student.dev_fraction``). Each model is compared with the first one and with ``--baseline``
(``distilflow.evaluate.compare.compare_scores``: the WER difference and its paired bootstrap
95 % interval, loops apart). Writes the JSON and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from distilflow.config import load_params
from distilflow.decoding.loop_guard import guard_of
from distilflow.evaluate.compare import clip_scores, compare_scores
from distilflow.evaluate.metrics import PairResult, evaluate_pair, pair_metrics
from distilflow.evaluate.models import ClipResult, whisper_model
from distilflow.evaluate.sets import EvalSet, audiofolder_set, dev_set
from distilflow.stats import corpus_wer


def seeded_sample(eval_set: EvalSet, cap: int | None, exclude: set[str]) -> EvalSet:
    """``eval_set`` without the clips whose file is in ``exclude``, then ``cap`` clips a
    language, in an order fixed by each clip's id (not by its name: prompts of one kind share
    a prefix). Pure."""
    kept = [c for c in eval_set.clips if Path(c.id).name not in exclude]
    kept.sort(key=lambda c: hashlib.sha256(f"compare:{c.id}".encode()).hexdigest())
    out, seen = [], dict[str, int]()
    for c in kept:
        if cap is None or seen.get(c.language, 0) < cap:
            out.append(c)
            seen[c.language] = seen.get(c.language, 0) + 1
    return dataclasses.replace(eval_set, clips=tuple(sorted(out, key=lambda c: c.id)))


def excluded_files(paths: list[Path]) -> set[str]:
    names = set()
    for p in paths:
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                names.add(Path(json.loads(line)["file_name"]).name)
    return names


def table(results: dict[str, dict[str, PairResult]], first: str, baseline: str) -> list[str]:
    """Markdown: per set and language, each model's WER (%) and its difference with ``first``
    and ``baseline`` (paired 95 % interval), loops apart."""
    head = f"| language | model | clips | WER % | loops | vs {first} (95% CI) | vs {baseline} |"
    lines = []
    for set_name, by_model in results.items():
        lines += [f"\n### {set_name}\n", head, "| --- " * 7 + "|"]
        scores = {m: clip_scores(r) for m, r in by_model.items()}
        languages = sorted({k[0] for s in scores.values() for k in s})
        for lang in [*languages, "all"]:
            for model in scores:
                lines.append(row(lang, model, scores, (first, baseline)))
    return lines


def of_language(scores: dict[Any, Any], lang: str) -> dict[Any, Any]:
    return {k: v for k, v in scores.items() if lang in ("all", k[0])}


def row(lang: str, model: str, scores: dict[str, Any], refs: tuple[str, str]) -> str:
    mine = of_language(scores[model], lang)
    wer = corpus_wer([v.errors for v in mine.values()], [v.words for v in mine.values()])
    cells = [diff(of_language(scores[r], lang), mine) if model != r else "–" for r in refs]
    loops = sum(v.looped for v in mine.values())
    pct = "–" if wer is None else f"{100 * wer:.1f}"
    return f"| {lang} | {model} | {len(mine)} | {pct} | {loops} | {cells[0]} | {cells[1]} |"


def diff(base: dict[Any, Any], mine: dict[Any, Any]) -> str:
    c = compare_scores(base, mine)
    if c["delta"] is None:
        return "–"
    return f"{100 * c['delta']:+.1f} ({100 * c['low']:+.1f}, {100 * c['high']:+.1f})"


def reused(earlier: dict[str, Any], name: str, ref: str, s: EvalSet) -> PairResult | None:
    """The earlier run's result of the same model (name and reference) on the same clips."""
    old = earlier.get("sets", {}).get(s.name, {}).get(name)
    if not old or earlier["models"].get(name) != ref or "result" not in old:
        return None
    clips = tuple(ClipResult(**c) for c in old["clips"])
    if sorted(c.id for c in clips) != sorted(c.id for c in s.clips):
        return None
    return PairResult(name, s.name, clips=clips, **old["result"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="name=reference")
    parser.add_argument("--set", action="append", default=[], help="name=audiofolder")
    parser.add_argument("--exclude", action="append", type=Path, default=[])
    parser.add_argument("--dev", type=Path, help="a project whose dev split to score")
    parser.add_argument("--cap", type=int, default=None, help="clips a language and set")
    parser.add_argument("--baseline", help="the model each is also compared with")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--reuse", type=Path, help="an earlier --out: its transcripts of the same model and set"
    )
    args = parser.parse_args()
    params = load_params(args.params)
    exclude = excluded_files(args.exclude)
    sets = [
        seeded_sample(audiofolder_set(name, Path(path)), args.cap, exclude)
        for name, path in (s.split("=", 1) for s in args.set)
    ]
    if args.dev:  # read raw: the project may be of another version of the params
        raw = yaml.safe_load((args.dev / "params.yaml").read_text(encoding="utf-8"))
        filtered = args.dev / raw["filter"]["out_dir"]
        sets.insert(0, dev_set(filtered, float(raw["student"]["dev_fraction"])))
    models = [whisper_model(*m.split("=", 1), Path(params.paths.cache_dir)) for m in args.model]
    results: dict[str, dict[str, PairResult]] = {s.name: {} for s in sets}
    out: dict[str, Any] = {"models": {m.name: m.ref for m in models}, "sets": {}}
    earlier = json.loads(args.reuse.read_text(encoding="utf-8")) if args.reuse else {}
    for model in models:
        for s in sets:
            r = reused(earlier, model.name, model.ref, s) or evaluate_pair(
                model, s, 128, "cpu", guard_of(params.decode)
            )
            results[s.name][model.name] = r
            out["sets"].setdefault(s.name, {})[model.name] = {
                "metrics": pair_metrics(r),
                "clips": [dataclasses.asdict(c) for c in r.clips],
                "result": {k: getattr(r, k) for k in ("ref", "model_id", "parameters")},
            }
            print(json.dumps({"model": model.name, "set": s.name}), flush=True)
    first = models[0].name
    lines = table(results, first, args.baseline or first)
    out["table"] = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
