"""A temporary copy of the project on tiny random models, for `dvc repro` and Prefect tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .conftest import REPO_ROOT, accept_random_labels, audio_bytes, tone, write_audiofolder

COPIED = ("distilflow", "flows", "tasks")
SHORT_TRAINING = dict(
    max_steps=2, batch_size=2, eval_every=2, save_every=2, warmup_steps=1,
    eval_max_new_tokens=2, progress=False,
)  # fmt: skip


def corpus_entries() -> list[dict[str, object]]:
    return [
        {"file_name": "a.wav", "bytes": audio_bytes(tone(1.0)), "text": "one", "language": "en"},
        {
            "file_name": "b.wav",
            "bytes": audio_bytes(tone(1.0, freq=300)),
            "text": "deux",
            "language": "fr",
        },
        {"file_name": "bad.wav", "bytes": b"not audio", "text": "x", "language": "en"},
    ]


def make_project(tmp_path: Path, experts_languages: tuple[str, ...] = ("en", "fr")) -> Path:
    """Code, dvc.yaml, prefect.yaml and a tiny params.yaml in ``tmp_path/proj``; corpus in
    ``corpus/`` (3 clips, one unreadable), an empty ``inbox/``, a held-out set; tracking in tmp."""
    from distilflow.testing import save_tiny_whisper

    proj = tmp_path / "proj"
    for name in COPIED:
        shutil.copytree(REPO_ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "prefect.yaml"):
        shutil.copy(REPO_ROOT / name, proj / name)
    write_audiofolder(proj / "corpus", corpus_entries())
    (proj / "inbox").mkdir()
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
    raw["ingest"]["sources"] = [
        {"kind": "audiofolder", "uri": "corpus"},
        {"kind": "audiofolder", "uri": "inbox"},
    ]
    raw["ingest"]["progress"] = False
    teacher = save_tiny_whisper(tmp_path / "tiny", seed=1, decoder_layers=4)  # emits text
    raw["label"].update(model=str(teacher), max_new_tokens=4, progress=False)
    raw["student"].update(SHORT_TRAINING, dev_fraction=0.01)
    # a language with too few clips has its stage record why and train nothing
    raw["experts"].update(SHORT_TRAINING, languages=list(experts_languages), rank=2, gate_width=4)
    # one clip survives the filter and trains the student: evaluate on a held-out folder
    # the corpus's languages only: each evaluation stage is a process start of its own
    raw["evaluate"].update(
        max_new_tokens=4,
        max_clips_per_language=2,
        extra_sets={"heldout": "heldout"},
        languages=sorted({"en", "fr", *experts_languages}),
    )
    raw["export"].update(verify_clips=2, max_new_tokens=4, max_wer_vs_torch=100.0)
    accept_random_labels(raw, tmp_path)
    write_params(proj, raw)
    return proj


def read_params(proj: Path) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((proj / "params.yaml").read_text(encoding="utf-8"))
    return raw


def write_params(proj: Path, raw: dict[str, Any]) -> None:
    (proj / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")


def drop_into_inbox(proj: Path, entries: list[dict[str, object]]) -> None:
    """Add clips and their metadata lines to the project's inbox (as a user would)."""
    inbox = proj / "inbox"
    with (inbox / "metadata.jsonl").open("a", encoding="utf-8") as fh:
        for e in entries:
            (inbox / str(e["file_name"])).write_bytes(e["bytes"])  # type: ignore[arg-type]
            fh.write(json.dumps({k: v for k, v in e.items() if k != "bytes"}) + "\n")


def project_env(proj: Path, **extra: str) -> dict[str, str]:
    """The environment a user's shell has in the project: the venv's tools on PATH."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(proj),
        "DVC_NO_ANALYTICS": "1",
        "PWD": str(proj),
        **extra,
    }


def run_in(proj: Path, env: dict[str, str], *cmd: str, timeout: float = 300) -> str:
    """Run a command in the project; its combined output, or an assertion naming the failure."""
    done = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def init_repos(proj: Path, env: dict[str, str]) -> None:
    run_in(proj, env, "git", "init", "-q")
    run_in(proj, env, sys.executable, "-m", "dvc", "init", "-q")
