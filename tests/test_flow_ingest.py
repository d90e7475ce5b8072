"""The ingest flow under a real (temporary) Prefect server (the DVC pipeline: test_retrain.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import corpus_entries, read_params, write_audiofolder, write_params


def small_params(tmp_path: Path, src: Path, out: Path) -> Path:
    raw = read_params()
    raw["ingest"].update(
        sources=[{"kind": "audiofolder", "uri": str(src)}], out_dir=str(out), progress=False
    )
    return write_params(tmp_path / "params.yaml", raw)


def test_ingest_flow_runs_under_prefect(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client  # noqa: F401  (server is up)

    from flows.ingest import ingest_flow

    out = tmp_path / "out"
    params = small_params(tmp_path, write_audiofolder(tmp_path / "src", corpus_entries()), out)
    state = ingest_flow(str(params), return_state=True)
    assert state.is_completed()
    report = state.result()
    assert (report["input"], report["kept"], report["quarantined"]) == (3, 2, 1)
    assert (out / "manifests" / "en.parquet").exists() and (
        out / "manifests" / "fr.parquet"
    ).exists()


def test_ingest_flow_fails_fast_on_bad_config(prefect_harness: None, tmp_path: Path) -> None:
    from distilflow.config import ConfigError
    from flows.ingest import ingest_flow

    bad = tmp_path / "params.yaml"
    bad.write_text("paths: {data_dir: d, cache_dir: c}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="missing key ingest"):
        ingest_flow(str(bad))
