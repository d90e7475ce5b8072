"""Prefect tasks wrapping pseudo-labelling."""

from __future__ import annotations

import functools
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import LabelConfig
from distilflow.label.cache import LabelCache
from distilflow.label.report import LabelReport
from distilflow.label.stage import load_clips, make_labeller, shards, write_labels
from distilflow.label.teacher import Clip, Labeller, label_clips
from distilflow.progress import progress


@functools.cache
def labeller_for(cfg: LabelConfig, cache_dir: Path) -> Labeller:
    """One loaded teacher per process (shards in the same worker share it)."""
    return make_labeller(cfg, cache_dir)


def cache_for(cfg: LabelConfig, labeller: Labeller) -> LabelCache:
    return LabelCache(Path(cfg.out_dir) / "cache", labeller.teacher_id, labeller.settings.hash())


@task(name="plan-label-shards", cache_policy=NO_CACHE)
def plan_shards(cfg: LabelConfig, ingest_root: str, cache_dir: Path) -> list[list[Clip]]:
    """Shards of the clips the cache does not hold yet."""
    clips = load_clips(Path(ingest_root), cfg.detect_language)
    done = cache_for(cfg, labeller_for(cfg, cache_dir)).done()
    todo = [c for c in clips if c.hash not in done]
    print(f"label: {len(clips)} clips, {len(clips) - len(todo)} cached, {len(todo)} to label")
    return shards(todo, cfg.shard_size)


@task(
    name="label-shard",
    retries=1,
    retry_delay_seconds=10,
    cache_policy=NO_CACHE,
    task_run_name="label-shard-{index}",
)
def label_shard(cfg: LabelConfig, clips: list[Clip], cache_dir: Path, index: int) -> int:
    """Label one shard; each finished batch is persisted at once, so a retry resumes."""
    labeller = labeller_for(cfg, cache_dir)
    with progress(len(clips), f"label shard {index}", unit="clip", enabled=cfg.progress) as bar:
        return label_clips(clips, labeller, cache_for(cfg, labeller), cfg.batch_size, bar.update)


@task(name="write-labels", cache_policy=NO_CACHE)
def collect_labels(cfg: LabelConfig, ingest_root: str, cache_dir: Path) -> LabelReport:
    """Per-language label files and the report, from the cache."""
    labeller = labeller_for(cfg, cache_dir)
    return write_labels(Path(ingest_root), cache_for(cfg, labeller), cfg, labeller.teacher_id)
