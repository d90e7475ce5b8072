"""The helpers the tests share: paths, synthetic audio, params.yaml files, tiny DVC projects,
crashing trackers. Fixtures live in ``conftest.py``; servers (PostgreSQL, S3, Prefect) in
``stack.py``; the tiny random Whisper itself in ``distilflow.testing`` (code uses it too)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from distilflow.sources.base import SourceItem

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTILFLOW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ASTERISK = SHARED_DATA / "asterisk-dev"  # real speech clips, when the machine has them
DEMO_CORPUS = REPO_ROOT / "demo" / "asterisk"  # 150 clips, 30 per language, in the repository


# --- synthetic audio -----------------------------------------------------------------------


def tone(seconds: float, sr: int = 16_000, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """A float32 sine tone."""
    t = np.arange(int(seconds * sr), dtype=np.float32) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def audio_bytes(
    samples: np.ndarray, sr: int = 16_000, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    """Encode samples (mono or (n, channels)) to bytes; ``subtype`` None: the format's default
    (16-bit PCM for WAV and FLAC)."""
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone_bytes(freq: float = 440.0, fmt: str = "FLAC", seconds: float = 0.2) -> bytes:
    """A short encoded sine tone (16 kHz mono): a clip whose content does not matter."""
    return audio_bytes(tone(seconds, freq=freq), fmt=fmt)


def write_audiofolder(root: Path, entries: list[dict[str, object]]) -> Path:
    """Write an audiofolder: each entry has file_name and optional bytes/text/language."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in entries:
        data = e.get("bytes")
        if isinstance(data, bytes):
            path = root / str(e["file_name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        lines.append({k: v for k, v in e.items() if k != "bytes"})
    with (root / "metadata.jsonl").open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    return root


def corpus_entries() -> list[dict[str, object]]:
    """Three clips for an audiofolder: one English, one French, one that is not audio."""
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


def by_id(items: list[SourceItem]) -> dict[str, SourceItem]:
    """Source items keyed by source_id."""
    return {item.source_id: item for item in items}


# --- params.yaml ---------------------------------------------------------------------------


def read_params(path: Path = REPO_ROOT / "params.yaml") -> dict[str, Any]:
    """A params.yaml as plain data, to change and write; the repository's by default."""
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return raw


def write_params(path: Path, raw: dict[str, Any]) -> Path:
    """Write ``raw`` as the params.yaml ``path``; returns ``path``."""
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def accept_random_labels(raw: dict[str, Any], tmp_path: Path) -> None:
    """params.yaml overrides for a tiny random teacher: keep all its labels, track in tmp_path."""
    raw["filter"].update(
        max_error={"default": 1e9}, drop_uppercase=False, max_compression_ratio=1e9
    )
    raw["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"


# the training options of a run that only has to show it works: 2 steps
SHORT_TRAINING = dict(
    max_steps=2, batch_size=2, eval_every=2, save_every=2, warmup_steps=1,
    eval_max_new_tokens=2, progress=False,
)  # fmt: skip


def project_params(tmp_path: Path, teacher: Path, **label: object) -> Path:
    """``tmp_path/params.yaml``: the demo corpus ingested, labelled by ``teacher`` (8 tokens),
    filtered, every output and cache under ``tmp_path``."""
    raw = read_params()
    raw["ingest"].update(
        sources=[{"kind": "audiofolder", "uri": str(DEMO_CORPUS)}],
        out_dir=str(tmp_path / "ingest"),
        progress=False,
    )
    raw["label"].update(
        model=str(teacher),
        out_dir=str(tmp_path / "labels"),
        progress=False,
        max_new_tokens=8,
        batch_size=8,
        shard_size=40,
    )
    raw["label"].update(label)
    raw["filter"]["out_dir"] = str(tmp_path / "filtered")
    raw["paths"]["cache_dir"] = str(tmp_path / "cache")
    return write_params(tmp_path / "params.yaml", raw)


def student_params(tmp_path: Path, teacher: Path, **student: object) -> Path:
    """``project_params`` plus a 6-step student in ``tmp_path/student`` that keeps every label
    of the random teacher."""
    path = project_params(tmp_path, teacher)
    raw = read_params(path)
    raw["student"].update(
        out_dir=str(tmp_path / "student"),
        max_steps=6,
        batch_size=4,
        eval_every=3,
        save_every=2,
        warmup_steps=2,
        eval_max_new_tokens=4,
        progress=False,
        dev_fraction=0.2,
    )
    raw["student"].update(student)
    accept_random_labels(raw, tmp_path)
    return write_params(path, raw)


# --- training ------------------------------------------------------------------------------


class Crash(Exception):
    """Raised by ``CrashAfter``: a training run killed in the middle."""


class CrashAfter:
    """A tracker that kills the run once it logs a step after ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step > self.step:
            raise Crash


# --- tiny DVC projects ---------------------------------------------------------------------

COPIED = ("distilflow", "flows", "tasks")


def make_project(
    tmp_path: Path, teacher: Path, experts_languages: tuple[str, ...] = ("en", "fr")
) -> Path:
    """Code, dvc.yaml, prefect.yaml and a tiny params.yaml in ``tmp_path/proj``, labelled by
    ``teacher``; corpus in ``corpus/`` (``corpus_entries``: one clip unreadable), an empty
    ``inbox/``, a held-out set; tracking in ``tmp_path``. No git or DVC repository yet."""
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
    raw = read_params()
    raw["ingest"]["sources"] = [
        {"kind": "audiofolder", "uri": "corpus"},
        {"kind": "audiofolder", "uri": "inbox"},
    ]
    raw["ingest"]["progress"] = False
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
    write_params(proj / "params.yaml", raw)
    return proj


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


def run_in(cwd: Path, env: dict[str, str], *cmd: str, timeout: float = 300) -> str:
    """Run a command in ``cwd``; its combined output, or an assertion naming the failure."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def init_repos(proj: Path, env: dict[str, str]) -> None:
    run_in(proj, env, "git", "init", "-q")
    run_in(proj, env, sys.executable, "-m", "dvc", "init", "-q")


def copy_project(template: Path, tmp_path: Path) -> Path:
    """A copy of a project of ``make_project`` (repositories included) in ``tmp_path/proj``,
    tracking in ``tmp_path``."""
    proj = shutil.copytree(template, tmp_path / "proj", symlinks=True)
    raw = read_params(proj / "params.yaml")
    accept_random_labels(raw, tmp_path)
    write_params(proj / "params.yaml", raw)
    return proj


class Recorder:
    """Keeps what a trainer logs (the Tracker protocol, in memory)."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append(metrics)
