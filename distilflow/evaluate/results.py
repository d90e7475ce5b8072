"""Per-language evaluation results: what ``evaluate-lang@<lang>`` and ``evaluate-experts@<lang>``
write, and how the ``evaluate`` stage merges every language back into one run's results.

A results file (``<evaluate.out_dir>/languages/<lang>/results.json``, and ``experts.json`` beside
it for the experts model of a language with experts) holds the per-clip results of every (model,
set) pair scored on that language, the clip counts of the sets, and the lineage (params hash:
a file written under other options is refused). Merging concatenates each pair's clips language
by language (sorted), which is the order a one-process run transcribes them in, so the merged
results give the same metrics.
Everything here but reading and writing the file is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distilflow.atomic import atomic_write_json
from distilflow.evaluate.metrics import PairResult
from distilflow.evaluate.models import ClipResult
from distilflow.lineage import Lineage

FORMAT = 2  # 2: each clip records how its transcript ended (ClipResult.stop)
FILES = {"languages": "results.json", "experts": "experts.json"}  # part -> file name
PARTS = tuple(FILES)  # evaluate-lang@<lang> | evaluate-experts@<lang>


class StaleResultsError(ValueError):
    """A results file that does not belong to this evaluation (other options or weights)."""


def results_path(out_dir: Path | str, part: str, language: str) -> Path:
    """Where the per-language stage of ``part`` writes ``language``'s results."""
    if part not in PARTS:
        raise ValueError(f"unknown results part {part!r}; known: {PARTS}")
    return Path(out_dir) / "languages" / language / FILES[part]


def pair_to_dict(result: PairResult) -> dict[str, Any]:
    """A JSON-ready PairResult. Pure."""
    return asdict(result)


def pair_from_dict(record: dict[str, Any]) -> PairResult:
    """The inverse of ``pair_to_dict``. Pure."""
    clips = tuple(ClipResult(**c) for c in record["clips"])
    return PairResult(
        str(record["model"]),
        str(record["eval_set"]),
        str(record["ref"]),
        str(record["model_id"]),
        int(record["parameters"]),
        clips,
    )


def results_record(
    language: str,
    part: str,
    results: Sequence[PairResult],
    set_counts: dict[str, int],
    lineage: Lineage,
) -> dict[str, Any]:
    """The content of one language's results.json. Pure."""
    for r in results:
        other = {c.language for c in r.clips} - {language}
        if other:
            raise ValueError(f"{r.model} on {r.eval_set}: clips of {sorted(other)} in {language}")
    return {
        "format": FORMAT,
        "language": language,
        "part": part,
        "lineage": lineage.to_dict(),
        "sets": dict(set_counts),
        "results": [pair_to_dict(r) for r in results],
    }


def write_results(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path, record)


def read_results(path: Path, params_hash: str) -> list[PairResult]:
    """One language's results; StaleResultsError when written under other options."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run its per-language evaluation stage first")
    record = json.loads(path.read_text(encoding="utf-8"))
    return results_of(record, params_hash, str(path))


def results_of(record: dict[str, Any], params_hash: str, where: str) -> list[PairResult]:
    """The PairResults of a results record, checked against ``params_hash``. Pure."""
    if record.get("format") != FORMAT:
        raise StaleResultsError(f"{where}: format {record.get('format')!r}, expected {FORMAT}")
    written = record["lineage"]["params_hash"]
    if written != params_hash:
        raise StaleResultsError(
            f"{where}: written under params {written}, the evaluation's are {params_hash}: "
            f"re-run the per-language stage of {record['language']}"
        )
    return [pair_from_dict(r) for r in record["results"]]


def split_by_language(results: Sequence[PairResult]) -> dict[str, list[PairResult]]:
    """Each language's share of ``results`` (what per-language stages would produce). Pure."""
    out: dict[str, list[PairResult]] = {}
    for r in results:
        for lang in sorted({c.language for c in r.clips}):
            clips = tuple(c for c in r.clips if c.language == lang)
            out.setdefault(lang, []).append(
                PairResult(r.model, r.eval_set, r.ref, r.model_id, r.parameters, clips)
            )
    return dict(sorted(out.items()))


def merge_results(
    per_language: Iterable[Sequence[PairResult]],
    models: Sequence[str],
    sets: Sequence[str],
) -> list[PairResult]:
    """One PairResult per (model, set) that has clips, in ``models`` x ``sets`` order, its clips
    language by language (sorted). A pair whose languages disagree on the weights raises
    StaleResultsError; ``parameters`` is the largest count (the model with a language's experts
    attached). Pure."""
    parts: dict[tuple[str, str], list[PairResult]] = {}
    for results in per_language:
        for r in results:
            parts.setdefault((r.model, r.eval_set), []).append(r)
    unknown = sorted(set(parts) - {(m, s) for m in models for s in sets})
    if unknown:
        raise StaleResultsError(f"results for pairs this evaluation does not have: {unknown}")
    merged = []
    for model in models:
        for set_name in sets:
            pieces = parts.get((model, set_name), [])
            clips = sorted(
                ((c.language, i, c) for i, p in enumerate(pieces) for c in p.clips),
                key=lambda t: (t[0], t[1]),
            )
            if not clips:
                continue
            ids = {(p.ref, p.model_id) for p in pieces if p.clips}
            if len(ids) > 1:
                raise StaleResultsError(
                    f"{model} on {set_name}: languages scored different weights {sorted(ids)}: "
                    "re-run the stale per-language stages"
                )
            ref, model_id = ids.pop()
            parameters = max(p.parameters for p in pieces if p.clips)
            merged.append(
                PairResult(model, set_name, ref, model_id, parameters, tuple(c for *_, c in clips))
            )
    return merged
