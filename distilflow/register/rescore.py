"""Score a released model directory again on the evaluation's dev clips of some languages.

The promotion gate needs this when the champion's recorded WER was measured on other clips or
decoding than the challenger's (:mod:`distilflow.register.wer_basis`), or when the champion has
no per-clip errors recorded (:mod:`distilflow.register.clip_errors`): the champion is then
decoded exactly as the evaluation decoded the challenger (same clips, references, token budget
and repetition guard, greedy at batch 1) and scored with the same measures, per language and per
clip. The directory is a registered release: a transformers Whisper, with
``experts/<lang>.safetensors`` for the languages whose experts ship (routed per language, as
consumers do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from distilflow.config import Params
from distilflow.decoding.loop_guard import guard_of
from distilflow.evaluate.metrics import evaluate_pair, language_metrics
from distilflow.evaluate.models import EvalModel, keep_model
from distilflow.evaluate.results import StaleResultsError
from distilflow.evaluate.sets import DEV, AudioClip, EvalSet
from distilflow.evaluate.stage import eval_sets
from distilflow.models.load import load_whisper
from distilflow.register.clip_errors import ClipErrors, Rescored, add_clip
from distilflow.register.consumer import EXPERTS_DIR
from distilflow.register.wer_basis import basis, decoding_key


def route_release(experts_dir: Path, model: Any, language: str) -> Any:
    """A release's ``prepare``: ``language``'s shipped experts, else the shared path."""
    from distilflow.models.experts import use_language

    use_language(model, experts_dir, language)
    return model


def release_model(name: str, directory: Path, cache_dir: Path | None = None) -> EvalModel:
    """A registered release directory as a model to evaluate."""
    experts = directory / EXPERTS_DIR
    prepare = partial(route_release, experts) if experts.is_dir() else keep_model
    load = partial(load_whisper, str(directory), cache_dir)
    return EvalModel(name, str(directory), load, None, prepare)


def decoding_of(params: Params) -> str:
    """How the evaluation decodes, as :func:`~distilflow.register.wer_basis.decoding_key` has it."""
    return decoding_key(params.evaluate.max_new_tokens, guard_of(params.decode))


def dev_clips_of(params: Params, languages: Sequence[str], expected: Mapping[str, str]) -> EvalSet:
    """Today's dev clips of ``languages``, each language checked against the basis the
    evaluation recorded (``expected``): a mismatch means the evaluation is older than the data."""
    clips: list[AudioClip] = []
    decoding = decoding_of(params)
    for lang in languages:
        dev = [s for s in eval_sets(params, lang) if s.name == DEV]
        mine = dev[0].clips if dev else ()
        found = basis(((c.hash, c.reference) for c in mine), decoding)
        if found != expected.get(lang):
            raise StaleResultsError(
                f"{lang}: the evaluation's dev clips are not today's ({len(mine)} clips now): "
                "run the evaluation again before registering"
            )
        clips.extend(mine)
    return EvalSet(DEV, tuple(clips))


def score_release_clips(
    params: Params,
    directory: Path,
    languages: Sequence[str],
    expected: Mapping[str, str],
    cache_dir: Path | None = None,
) -> Rescored:
    """Per-language WER of the release in ``directory`` on the evaluation's dev clips of
    ``languages`` (checked against ``expected``, the evaluation's bases), with the per-clip
    errors behind each WER (:mod:`distilflow.register.clip_errors`), for the gate's paired
    comparison."""
    dev = dev_clips_of(params, languages, expected)
    ev = params.evaluate
    model = release_model("champion", directory, cache_dir)
    result = evaluate_pair(model, dev, ev.max_new_tokens, ev.device, guard_of(params.decode))
    wer = {
        lang: language_metrics(lang, [c for c in result.clips if c.language == lang])["wer"]
        for lang in languages
    }
    clips: ClipErrors = {}
    for c in result.clips:  # a dev clip's id is its content hash
        add_clip(clips, c.language, c.id, c.reference, c.hypothesis)
    return Rescored(wer, clips)
