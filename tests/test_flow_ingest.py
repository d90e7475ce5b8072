"""The ingest flow under a real (temporary) Prefect server (the DVC pipeline: test_retrain.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import REPO_ROOT, audio_bytes, tone, write_audiofolder


def small_params(tmp_path: Path, src: Path, out: Path) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["ingest"]["sources"] = [{"kind": "audiofolder", "uri": str(src)}]
    raw["ingest"]["out_dir"] = str(out)
    raw["ingest"]["progress"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def small_folder(root: Path) -> Path:
    return write_audiofolder(
        root,
        [
            {
                "file_name": "a.wav",
                "bytes": audio_bytes(tone(1.0)),
                "text": "one",
                "language": "en",
            },
            {
                "file_name": "b.wav",
                "bytes": audio_bytes(tone(1.0, freq=300)),
                "text": "deux",
                "language": "fr",
            },
            {"file_name": "bad.wav", "bytes": b"not audio", "text": "x", "language": "en"},
        ],
    )


def test_ingest_flow_runs_under_prefect(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client  # noqa: F401  (server is up)

    from flows.ingest import ingest_flow

    out = tmp_path / "out"
    params = small_params(tmp_path, small_folder(tmp_path / "src"), out)
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
