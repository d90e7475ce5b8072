"""Prefect tasks of the export stage: the student (optionally with one language's experts merged
into its feed-forward weights) to CTranslate2, then checked against the torch model on dev clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import Params, section_hash
from distilflow.export.convert import WhisperPair, export_ct2, read_export_info
from distilflow.export.report import (
    ExportVerification,
    FasterWhisperCheck,
    FasterWhisperMissing,
)
from distilflow.export.verify import VerifyClip, dev_verify_clips, faster_whisper_transcribe
from distilflow.export.verify import verify_export as compare_with_torch
from distilflow.lineage import git_commit
from distilflow.models.load import load_whisper, transformers_dir_fingerprint
from distilflow.text import normalize

VERIFICATION_FILE = "verification.json"


def export_dir(params: Params) -> Path:
    return Path(params.export.out_dir) / "model"


def student_dir(params: Params) -> Path:
    return Path(params.student.out_dir) / "model"


def merged_language(params: Params) -> str | None:
    """The language whose experts are merged: ``export.language``, unless its experts lost to
    the student alone (the experts stage then serves the student: nothing to merge)."""
    language = params.export.language
    if language is None:
        return None
    from distilflow.models.experts import expert_path, read_expert_metadata

    meta = read_expert_metadata(expert_path(params.experts.out_dir, language))
    return None if meta["no_experts"] else language


def exported_model(params: Params) -> WhisperPair:
    """The torch model that is exported: the student, or the student with experts merged."""
    loaded = load_whisper(str(student_dir(params)))
    language = merged_language(params)
    if language is None:
        return loaded.model, loaded.processor
    from distilflow.models.experts import expert_path, load_experts, merge_language

    load_experts(loaded.model, expert_path(params.experts.out_dir, language), loaded.fingerprint)
    return merge_language(loaded.model), loaded.processor


@task(name="export-ct2", cache_policy=NO_CACHE)
def export_student(params: Params) -> dict[str, Any]:
    """Convert the student to CTranslate2 (``export.quantization``) under ``export.out_dir``."""
    cfg = params.export
    lineage = {
        "git_commit": git_commit(),
        "params_hash": section_hash(cfg),
        "student_fingerprint": transformers_dir_fingerprint(student_dir(params)),
    }
    language = merged_language(params)
    if cfg.language is not None and language is None:
        print(
            f"export: {cfg.language}'s experts lost to the student alone: the student is exported"
        )
    if language is None:
        export_ct2(student_dir(params), export_dir(params), cfg.quantization, lineage=lineage)
    else:
        export_ct2(
            None,
            export_dir(params),
            cfg.quantization,
            model=exported_model(params),
            language=language,
            lineage=lineage,
        )
    info = read_export_info(export_dir(params))
    print(f"export: {export_dir(params)} ({cfg.quantization}, language {language})")
    return info


def faster_whisper_check(
    ct2_dir: Path, clips: list[VerifyClip], ct2_texts: list[str]
) -> FasterWhisperCheck | FasterWhisperMissing:
    """faster-whisper's transcripts of the clips (its own front end) against the export's."""
    try:
        texts = faster_whisper_transcribe(ct2_dir, clips)
    except ImportError as exc:
        return FasterWhisperMissing(installed=False, error=str(exc))
    pairs = list(zip(texts, ct2_texts, strict=True))
    same = sum(a == b for a, b in pairs)
    same_words = sum(normalize(a, "basic") == normalize(b, "basic") for a, b in pairs)
    n = max(len(pairs), 1)
    return FasterWhisperCheck(
        installed=True,
        clips=len(texts),
        same_text_as_ctranslate2_share=same / n,
        same_normalised_text_as_ctranslate2_share=same_words / n,
        texts=texts,
    )


@task(name="verify-export", cache_policy=NO_CACHE)
def verify_student_export(params: Params) -> ExportVerification:
    """Decode dev clips with the export and the torch model; fail above the WER bound."""
    cfg = params.export
    model, processor = exported_model(params)
    clips = dev_verify_clips(
        Path(params.filter.out_dir), params.student.dev_fraction, cfg.language, cfg.verify_clips
    )
    report = compare_with_torch(export_dir(params), model, processor, clips, cfg.max_new_tokens)
    ct2_texts = [c.ct2_text for c in report.comparisons]
    fw = faster_whisper_check(export_dir(params), clips, ct2_texts)
    result = ExportVerification.of(report, merged_language(params), cfg.quantization, fw)
    result.write(Path(cfg.out_dir) / VERIFICATION_FILE)
    print(f"export verification: {report.summary()}")
    where = f"see {cfg.out_dir}/{VERIFICATION_FILE}"
    if result.wer_vs_torch_settled > cfg.max_wer_vs_torch:
        raise RuntimeError(
            f"export WER against the torch model {result.wer_vs_torch_settled:.3f} exceeds "
            f"export.max_wer_vs_torch {cfg.max_wer_vs_torch}; {where}"
        )
    if result.export_loop_share > cfg.max_loop_share:
        raise RuntimeError(
            f"the export looped on {result.export_loop_clips} of {result.clips} clips "
            f"where the torch model did not "
            f"({result.export_loop_share:.3f} > export.max_loop_share {cfg.max_loop_share}); "
            f"{where}"
        )
    return result
