"""The ingest flow under a real (temporary) Prefect server, and the DVC stage that runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO_ROOT, accept_random_labels, audio_bytes, tone, write_audiofolder


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


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_then_does_nothing(
    prefect_harness: None, tmp_path: Path
) -> None:
    """A temporary copy of the project: `dvc repro` runs every stage, a second one skips all."""
    from distilflow.testing import save_tiny_whisper

    proj = tmp_path / "proj"
    for name in ("distilflow", "flows", "tasks"):
        shutil.copytree(REPO_ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", proj / "dvc.yaml")
    small_folder(proj / "inbox")
    write_audiofolder(
        proj / "heldout",
        [
            {
                "file_name": "h.wav",
                "bytes": audio_bytes(tone(1.0, freq=700)),
                "text": "two",
                "language": "en",
            }
        ],
    )
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["ingest"]["sources"] = [{"kind": "audiofolder", "uri": "inbox"}]
    raw["ingest"]["progress"] = False
    teacher = save_tiny_whisper(tmp_path / "tiny", seed=1, decoder_layers=4)  # emits text
    raw["teacher"].update(model=str(teacher), max_new_tokens=4, progress=False)
    short = dict(
        max_steps=2, batch_size=2, eval_every=2, save_every=2, warmup_steps=1,
        eval_max_new_tokens=2, progress=False,
    )  # fmt: skip
    raw["student"].update(short, dev_fraction=0.01)
    # a language with too few clips has its stage record why and train nothing
    raw["experts"].update(short, languages=["en", "fr"], rank=2, gate_width=4)
    # one clip survives the filter and trains the student: evaluate on a held-out folder
    raw["evaluate"].update(
        max_new_tokens=4, max_clips_per_language=2, extra_sets={"heldout": "heldout"}
    )
    raw["export"].update(verify_clips=2, max_new_tokens=4, max_wer_vs_torch=100.0)
    accept_random_labels(raw, tmp_path)
    (proj / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(proj),
        "DVC_NO_ANALYTICS": "1",
    }
    from prefect.settings import get_current_settings

    env["PREFECT_API_URL"] = str(get_current_settings().api.url)  # the harness's running server

    def sh(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    first = sh(sys.executable, "-m", "dvc", "repro")
    stages = ("ingest", "label", "filter", "student", "experts@en", "experts@fr", "evaluate")
    for stage in (*stages, "register", "export"):
        assert f"Running stage '{stage}'" in first
    report = json.loads((proj / "data" / "ingest" / "report.json").read_text())
    assert (report["input"], report["kept"], report["quarantined"]) == (3, 2, 1)
    decision = json.loads((proj / "data" / "registry" / "decision.json").read_text())
    assert decision["version"] == "1" and decision["decision"]["verdict"]
    assert (proj / "data" / "export" / "model" / "model.bin").is_file()
    for lang in ("en", "fr"):  # trained, or skipped with its reason
        assert (
            json.loads((proj / "data" / "experts" / lang / "report.json").read_text())["language"]
            == lang
        )
    second = sh(sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in second and "didn't change" in second
    # new data in the source folder re-runs the chain, which processes only the new file
    # (only up to label here: the later stages are exercised by the first run)
    (proj / "inbox" / "c.wav").write_bytes(audio_bytes(tone(0.7, freq=1500)))
    third = sh(sys.executable, "-m", "dvc", "repro", "label")  # upstream of label only
    assert "Running stage 'ingest'" in third and "decoded 1 new" in third
    assert "1 to label" in third
