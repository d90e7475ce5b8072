"""Prefect task wrapping the WER filter."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from distilflow.config import FilterConfig
from distilflow.filter.report import FilterReport
from distilflow.filter.stage import run_filter


@task(name="filter-labels", cache_policy=NO_CACHE)
def filter_labels(
    cfg: FilterConfig, labels_dir: str, languages: tuple[str, ...] = ()
) -> FilterReport:
    """Keep or drop every pseudo-label, persisting each decision with its reason."""
    report = run_filter(Path(labels_dir), cfg, languages)
    ref_only = sum(sum(r.reference_only.values()) for r in report.by_language.values())
    print(
        f"filter: {report.input} labels = {report.kept} kept ({ref_only} of them for their "
        f"reference only: the teacher's label failed) + {report.dropped} dropped"
    )
    return report
