"""The evaluation stage's pieces: which eval sets, which models, which results files, checks.

Eval sets: the student's dev split (``dev``) and the audiofolders of ``evaluate.extra_sets``,
restricted to ``evaluate.languages``. Models: ``teacher`` (``label.model``), ``student``
(``student.out_dir/model``) and ``experts`` (the student routed to each language's experts).

The work is split by language so that new data for one language re-scores only that language.
The orchestration is ``flows/evaluate.py`` (its tasks: ``tasks/evaluate.py``):

- ``evaluate_language_flow`` (DVC ``evaluate-lang@<lang>``): the models that need no experts on
  that language's clips of every set; the ``experts`` model too where the language has no
  experts (it is then the student on the shared path). Writes
  ``<out_dir>/languages/<lang>/results.json``.
- ``evaluate_language_flow(..., part="experts")`` (DVC ``evaluate-experts@<lang>``, for each
  language of ``experts.languages``): the ``experts`` model routed to that language's experts.
  Writes ``<out_dir>/languages/<lang>/experts.json``. Kept apart so that only these stages
  depend on ``data/experts/<lang>``, which exists for expert languages only.
- ``evaluate_report_flow`` (DVC ``evaluate``): merges every language's results, measures peak
  memory and writes the outputs (see ``eval_report.write_evaluation``): ``metrics.json``,
  ``plots/``, ``report.md``, ``report.json``, ``transcripts.jsonl``.
- ``evaluate_flow``: all of it in one process, no files in between (users without DVC); the
  same per-language code path, so the metrics are those of the per-language stages.

Pairs run one after another, never side by side: concurrent decoding would distort the speed.
The peak-memory measurements (one fresh process per model) may overlap.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from distilflow.config import Params, section_hash
from distilflow.evaluate.metrics import PairResult, stage_lineage
from distilflow.evaluate.models import EvalModel, peak_memory_mb, standard_models
from distilflow.evaluate.results import (
    StaleResultsError,
    merge_results,
    read_results,
    results_path,
    results_record,
)
from distilflow.evaluate.sets import (
    AudioClip,
    EmptyDevSplitError,
    EvalSet,
    EvalSetError,
    audiofolder_set,
    dev_set,
)

log = logging.getLogger(__name__)

EXPERTS = "experts"  # the model that needs data/experts/<lang>


def only_languages(eval_set: EvalSet, languages: Sequence[str]) -> EvalSet:
    """``eval_set`` with the clips of ``languages`` only. Pure."""
    return replace(eval_set, clips=tuple(c for c in eval_set.clips if c.language in languages))


def of_language(sets: Sequence[EvalSet], language: str) -> list[EvalSet]:
    """The sets with ``language``'s clips only, those without any left out. Pure (and the same
    sets ``eval_sets(params, language)`` reads, as the cap is per language)."""
    kept = [only_languages(s, [language]) for s in sets]
    return [s for s in kept if s.clips]


def eval_sets(params: Params, language: str | None = None) -> list[EvalSet]:
    """``dev`` then the extra sets, in the order params.yaml lists them, with the clips of
    ``evaluate.languages`` (or of ``language`` alone); sets without such clips are left out.

    For one language, only that language's filtered manifest is read, and a language without
    clips anywhere gives no set. For the whole evaluation, no clip at all is an error."""
    ev = params.evaluate
    wanted = [language] if language is not None else list(ev.languages)
    cap = ev.max_clips_per_language
    extra = [audiofolder_set(name, path, cap) for name, path in ev.extra_sets.items()]
    filtered = Path(params.filter.out_dir)
    try:
        dev = [dev_set(filtered, params.student.dev_fraction, cap, wanted if language else None)]
    except EmptyDevSplitError as exc:
        if language is None and not extra:
            raise
        log.warning("%s; evaluating on the extra sets only", exc)
        dev = []
    sets = [only_languages(s, wanted) for s in [*dev, *extra]]
    kept = [s for s in sets if s.clips]
    if language is None and not kept:
        raise EvalSetError(f"no eval set holds a clip in evaluate.languages {wanted}")
    return kept


def eval_models(params: Params, cache_dir: Path | None) -> list[EvalModel]:
    """The models of ``evaluate.models``, in that order."""
    return standard_models(
        params.evaluate.models,
        params.label.model,
        Path(params.student.out_dir) / "model",
        cache_dir,
        Path(params.experts.out_dir),
    )


def part_models(params: Params, part: str, language: str) -> list[str]:
    """Names of the models the per-language stage of ``part`` scores on ``language``. Pure.

    ``experts`` is scored by the ``experts`` part where ``language`` has experts, by the
    ``languages`` part elsewhere (the student on the shared path)."""
    names = params.evaluate.models
    has_experts = language in params.experts.languages
    if part == "experts":
        in_scope = has_experts and language in params.evaluate.languages
        return [n for n in names if n == EXPERTS and in_scope]
    return [n for n in names if not (n == EXPERTS and has_experts)]


def params_hash(params: Params) -> str:
    """Hash of every option the stage reads: the evaluate section, dev_fraction, label.model,
    experts.languages (which stage scores the experts model) and the decode section."""
    key = (
        f"{section_hash(params.evaluate)}|{params.student.dev_fraction}|{params.label.model}"
        f"|{sorted(params.experts.languages)}|{section_hash(params.decode)}"
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def memory_clip(eval_model: EvalModel, sets: Sequence[EvalSet]) -> tuple[str, AudioClip]:
    """The clip peak memory is measured on: the first clip (of the first set) the model covers."""
    for s in sets:
        for clip in s.clips:
            if eval_model.language in (None, clip.language):
                return s.name, clip
    raise ValueError(f"{eval_model.name}: no eval set holds a clip in {eval_model.language}")


def measure_memory(
    eval_model: EvalModel, sets: Sequence[EvalSet], max_new_tokens: int, device: str
) -> float:
    """Peak memory (MiB) of ``eval_model`` transcribing one clip, in a fresh process."""
    set_name, clip = memory_clip(eval_model, sets)
    return peak_memory_mb(eval_model, set_name, clip, max_new_tokens, device)


def language_record(
    params: Params,
    part: str,
    language: str,
    sets: Sequence[EvalSet],
    results: Sequence[PairResult],
) -> dict[str, Any]:
    """The results.json of one language's stage, with its lineage."""
    lineage = stage_lineage(params_hash(params), sets, results)
    return results_record(language, part, results, {s.name: len(s.clips) for s in sets}, lineage)


def check_complete(
    results: Sequence[PairResult], models: Sequence[EvalModel], sets: Sequence[EvalSet]
) -> None:
    """Every (model, set) pair scored on exactly the set's clips the model covers, else
    StaleResultsError (a language's results from older manifests, or one missing)."""
    got = {(r.model, r.eval_set): {(c.language, c.id) for c in r.clips} for r in results}
    for m in models:
        for s in sets:
            want = {(c.language, c.id) for c in s.clips if m.language in (None, c.language)}
            have = got.get((m.name, s.name), set())
            if want != have:
                langs = sorted({lang for lang, _ in want ^ have})
                raise StaleResultsError(
                    f"{m.name} on {s.name}: the per-language results of {langs} do not match "
                    "the set's clips: re-run those languages' evaluation stages"
                )


def result_files(params: Params) -> list[Path]:
    """The results.json files the ``evaluate`` stage merges, language by language."""
    out = params.evaluate.out_dir
    files = []
    for lang in sorted(params.evaluate.languages):
        files.append(results_path(out, "languages", lang))
        if part_models(params, "experts", lang):  # else its stage writes no result
            files.append(results_path(out, "experts", lang))
    return files


def read_language_results(params: Params) -> list[list[PairResult]]:
    """Every language's results, checked against the current params."""
    digest = params_hash(params)
    return [read_results(path, digest) for path in result_files(params)]


def report_from(
    params: Params,
    models: Sequence[EvalModel],
    sets: Sequence[EvalSet],
    per_language: Sequence[Sequence[PairResult]],
) -> list[PairResult]:
    """The merged results of every language, checked complete."""
    results = merge_results(per_language, [m.name for m in models], [s.name for s in sets])
    check_complete(results, models, sets)
    return results
