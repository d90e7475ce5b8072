"""Ingestion sources: one module per kind, built from a :class:`SourceConfig`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from distilflow.config import SourceConfig
from distilflow.sources.base import Source, SourceError, SourceItem

__all__ = ["Source", "SourceError", "SourceItem", "iter_items", "make_source"]


def make_source(cfg: SourceConfig) -> Source:
    """The source object for one configured source (imports only what that kind needs)."""
    if cfg.kind == "audiofolder":
        from distilflow.sources.audiofolder import AudioFolderSource

        return AudioFolderSource(Path(cfg.uri), language=cfg.language)
    if cfg.kind == "commonvoice":
        from distilflow.sources.commonvoice import CommonVoiceSource

        return CommonVoiceSource(
            Path(cfg.uri), split=cfg.split or "validated", language=cfg.language
        )
    if cfg.kind == "hf":
        from distilflow.sources.hf import HFDatasetSource

        return HFDatasetSource(
            cfg.uri,
            split=cfg.split or "train",
            text_column=cfg.text_column,
            language=cfg.language,
            streaming=cfg.streaming,
        )
    if cfg.kind == "s3":
        from distilflow.sources.s3 import S3Source

        return S3Source(cfg.uri, endpoint_url=cfg.endpoint_url, language=cfg.language)
    raise SourceError(f"{cfg.uri}: unknown source kind {cfg.kind!r}")


def iter_items(configs: list[SourceConfig]) -> Iterator[SourceItem]:
    """Every item of every configured source, in order."""
    for cfg in configs:
        yield from make_source(cfg).items()
