"""What gets registered: the student plus the languages' experts that earned their place.

A language's experts ship only when, on the evaluation's dev set, the student routed to them
scores a strictly lower WER than the student alone; every other language decodes with the
shared path. The release's WER per language is then the better of the two. The choice and the
figures are pure functions; ``assemble`` copies the files and records how the release decodes
(``distilflow_decode.json``, :mod:`distilflow.register.decode_file`).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from distilflow.models.convert import atomic_dir
from distilflow.models.experts import expert_path
from distilflow.register.consumer import EXPERTS_DIR
from distilflow.register.decode_file import ServingDecode, write_decode


def chosen_languages(
    student_wer: Mapping[str, float], experts_wer: Mapping[str, float]
) -> list[str]:
    """Languages whose experts beat the student alone (NaN or missing never do). Pure."""
    return sorted(
        lang
        for lang, wer in experts_wer.items()
        if not math.isnan(wer)
        and lang in student_wer
        and (math.isnan(student_wer[lang]) or wer < student_wer[lang])
    )


def release_wer(
    student_wer: Mapping[str, float], experts_wer: Mapping[str, float], chosen: Iterable[str]
) -> dict[str, float]:
    """Per-language WER of the release: the experts' where they ship, else the student's. Pure."""
    picked = set(chosen)
    return {
        lang: float(experts_wer[lang] if lang in picked else wer)
        for lang, wer in sorted(student_wer.items())
    }


def dev_wer(metrics: Mapping[str, Any], model: str, eval_set: str = "dev") -> dict[str, float]:
    """Per-language WER of ``model`` on ``eval_set`` from the evaluation's metrics.json."""
    languages = metrics.get("sets", {}).get(eval_set, {}).get(model, {}).get("languages", {})
    return {str(lang): float(row["wer"]) for lang, row in languages.items()}


def assemble(
    student_dir: Path,
    experts_out: Path,
    languages: list[str],
    dst: Path,
    decode: ServingDecode | None = None,
) -> Path:
    """``dst``: a copy of the student directory with ``experts/<lang>.safetensors`` of each
    chosen language and, given ``decode``, the ``distilflow_decode.json`` consumers decode with
    (replacing what was there, atomically)."""
    if dst.exists():
        shutil.rmtree(dst)
    with atomic_dir(dst) as tmp:
        shutil.copytree(student_dir, tmp, dirs_exist_ok=True)
        if languages:
            (tmp / EXPERTS_DIR).mkdir(exist_ok=True)
        for lang in languages:
            shutil.copyfile(
                expert_path(experts_out, lang), tmp / EXPERTS_DIR / f"{lang}.safetensors"
            )
        if decode is not None:
            write_decode(tmp, decode)
    return dst
