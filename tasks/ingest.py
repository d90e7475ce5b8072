"""Prefect task wrapping ingestion."""

from __future__ import annotations

from prefect import task

from distilflow.config import IngestConfig
from distilflow.ingest.report import IngestReport
from distilflow.ingest.stage import ingest
from distilflow.sources import SourceError, iter_items


@task(name="ingest-sources", retries=2, retry_delay_seconds=[5, 30], log_prints=True)
def ingest_sources(cfg: IngestConfig) -> IngestReport:
    """Ingest every configured source into ``cfg.out_dir``; returns the report.

    Retried on transient I/O errors (network sources); the ledger makes a retry cheap.
    """
    result = ingest(iter_items(cfg.sources), cfg)
    print(
        f"ingest: {result.report.input} input = {result.kept} kept + "
        f"{result.quarantined} quarantined; decoded {result.decoded} new"
    )
    return result.report


__all__ = ["SourceError", "ingest_sources"]
