"""The pseudo-labelling stage: which clips to label, with which teacher, and the output files.

``labels/<lang>.parquet`` holds, per ingested clip, its manifest fields plus the teacher's label
(the manifest's ``path`` is rewritten relative to the labels directory).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from distilflow.config import LabelConfig, section_hash
from distilflow.label.cache import LabelCache
from distilflow.label.report import LabelReport, TeacherInfo
from distilflow.label.teacher import Clip, GenerationSettings, Labeller, TransformersLabeller
from distilflow.lineage import Lineage, combine_hashes, git_commit
from distilflow.manifest import read_manifest, write_language_tables
from distilflow.models.device import pick_device
from distilflow.models.encoder_cache import states_cache


def settings_of(cfg: LabelConfig) -> GenerationSettings:
    return GenerationSettings(cfg.backend, cfg.max_new_tokens, cfg.num_beams, cfg.timestamps)


def load_clips(ingest_root: Path, detect_language: bool = True) -> list[Clip]:
    """Every ingested clip, undetermined languages included when they are to be detected."""
    df = read_manifest(ingest_root)
    if not detect_language:
        df = df[df["language"].notna()]
    return [
        Clip(r.hash, r.audio_path, None if pd.isna(r.language) else r.language, float(r.duration_s))
        for r in df.itertuples()
    ]


def shards(clips: list[Clip], size: int) -> list[list[Clip]]:
    """Cut the clips, ordered by language and length, into shards for parallel tasks. Pure."""
    ordered = sorted(clips, key=lambda c: (c.language or "", c.duration_s, c.hash))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def make_labeller(cfg: LabelConfig, cache_dir: Path | None) -> Labeller:
    """Load the teacher for the configured backend."""
    from distilflow.models import load_whisper

    if cfg.backend == "ctranslate2":
        from distilflow.label.teacher_ct2 import Ct2Labeller

        return Ct2Labeller.from_ref(cfg.model, settings_of(cfg), cfg.device, cache_dir)
    loaded = load_whisper(cfg.model, cache_dir=cache_dir)
    encoder_cache = None
    if cfg.cache_encoder and cache_dir is not None:  # the key names weights, dtype and padding
        encoder_cache = states_cache(
            cache_dir / "encoder", loaded.model.model.encoder, loaded.processor.feature_extractor
        )
    return TransformersLabeller(
        loaded.model,
        loaded.processor,
        loaded.fingerprint,
        settings_of(cfg),
        pick_device(cfg.device),
        encoder_cache,
    )


def write_labels(
    ingest_root: Path, cache: LabelCache, cfg: LabelConfig, teacher_id: str
) -> LabelReport:
    """Join the manifests with the cached labels into ``labels/<lang>.parquet``; the report."""
    out = Path(cfg.out_dir)
    manifest = read_manifest(ingest_root)
    records = pd.DataFrame([r.__dict__ for r in cache.read(set(manifest["hash"]))])
    if records.empty:
        raise RuntimeError(f"{cache.dir}: no labels for the clips of {ingest_root}")
    human = manifest.drop(columns=["language"]).rename(columns={"text": "reference"})
    merged = human.merge(records, on="hash", how="inner")  # text = the teacher's label
    lineage = Lineage(git_commit(), section_hash(cfg), combine_hashes(merged["hash"]), teacher_id)
    counts = write_language_tables(out / "labels", merged, out, merged["language"], lineage)
    report = LabelReport(
        clips=len(manifest),
        labelled=len(merged),
        by_language=counts,
        language_detected=dict(Counter(merged.loc[merged["language_detected"], "language"])),
        teacher=TeacherInfo(model=cfg.model, id=teacher_id, backend=cfg.backend),
        lineage=lineage,
    )
    report.write(out / "report.json")
    return report
