"""Deployed speed: our models through CTranslate2 int8 against faster-whisper int8 on the teacher.

    python -m bench.deployed --models teacher=pypi:whisper-base dynamic=DIR ... \\
        [--project ~/.cache/distilflow/results/project] [--n 60] [--batch 1] [--torch NAME ...]
        [--no-memory]

Clips: the results run's held-out test splits (``evaluate.extra_sets`` named ``test*`` of the
project's params.yaml: asterisk-dev's ``test`` and ``test-festvox-ru``), ``--n`` a language.
Rows, all greedy, language forced, no timestamps, 2 CPU threads each, clip by clip interleaved in
this one process so the machine's load hits every row alike:

- ``faster-whisper``: ``faster_whisper.WhisperModel`` on the teacher's CTranslate2 int8 files
  (``pypi:whisper-base``), ``transcribe`` with beam 1, no VAD, no temperature fallback, no
  conditioning on previous text: what users run today (its own front end, a 30 s window). Its
  ``transcribe`` takes one file: with ``--batch`` above 1 it decodes a batch's clips one by one,
  as a user with many files does, while our rows decode the batch at once.
- ``<name> ct2``: distilflow's consumer, ``RegisteredWhisper.from_dir(dir,
  backend="ctranslate2")``: the model's CTranslate2 int8 conversion, a dynamic-context model fed
  the clip's own length plus its margin; the repetition guard on the finished tokens.
- ``<name> torch`` (``--torch``): the same consumer on transformers, fp32.

Figures per row and set: corpus WER with its bootstrap 95 % interval, per language, the paired
difference to faster-whisper's WER on the same clips, loops (clips whose transcript's gzip
compression ratio is above 2.4, Whisper's threshold), seconds a clip and a second of audio, the
speed-up over faster-whisper (total time over total time), and peak resident memory (each row
alone in a fresh process on 8 clips: ``--memory-row``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import provenance, write_result
from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.config import load_params
from distilflow.evaluate.sets import AudioClip, audiofolder_set
from distilflow.export.verify import faster_whisper_text
from distilflow.stats import paired_bootstrap, wer_interval
from distilflow.text import clip_error_counts, compression_ratio

REPO = Path(__file__).resolve().parents[1]
PROJECT = Path.home() / ".cache" / "distilflow" / "results" / "project"
THREADS = 2
LOOP_RATIO = 2.4
BASELINE = "faster-whisper"


class FasterWhisperRow:
    """faster-whisper int8 on the teacher's CTranslate2 files."""

    def __init__(self, ct2_dir: Path) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(
            str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=THREADS
        )

    def __call__(self, audios: list[np.ndarray], language: str) -> list[str]:
        return [faster_whisper_text(self.model, audio, language) for audio in audios]


class ConsumerRow:
    """distilflow's consumer on a model directory, on ctranslate2 or transformers."""

    def __init__(self, model_dir: Path, backend: str) -> None:
        from distilflow.register.consumer import RegisteredWhisper

        self.model = RegisteredWhisper.from_dir(model_dir, backend=backend, threads=THREADS)  # type: ignore[arg-type]

    def __call__(self, audios: list[np.ndarray], language: str) -> list[str]:
        return self.model.transcribe_many(audios, language, batch_size=len(audios))


def model_dir(ref: str, work: Path) -> Path:
    """A transformers directory for ``ref`` (``pypi:whisper-base`` is converted and saved)."""
    path = Path(ref)
    if path.is_dir():
        return path
    from distilflow.models import load_whisper

    loaded = load_whisper(ref)
    dst = work / ref.replace(":", "-").replace("/", "-")
    if not (dst / "config.json").is_file():
        loaded.model.save_pretrained(dst)
        loaded.processor.save_pretrained(dst)
    return dst


def make_row(row: str, models: dict[str, Path]) -> Any:
    if row == BASELINE:
        from distilflow.models.registry_whisper import fetch_registry_model

        return FasterWhisperRow(fetch_registry_model("whisper-base"))
    name, backend = row.rsplit(" ", 1)
    return ConsumerRow(models[name], "ctranslate2" if backend == "ct2" else "transformers")


def test_clips(project: Path, n: int) -> dict[str, list[AudioClip]]:
    params = load_params(project / "params.yaml")
    return {
        name: list(audiofolder_set(name, project / path, n).clips)
        for name, path in sorted(params.evaluate.extra_sets.items())
        if name.startswith("test")
    }


def batches(clips: list[AudioClip], size: int) -> list[list[int]]:
    """Indices in batches of one language, in the set's order."""
    out: list[list[int]] = []
    for lang in sorted({c.language for c in clips}):
        idx = [i for i, c in enumerate(clips) if c.language == lang]
        out += [idx[i : i + size] for i in range(0, len(idx), size)]
    return out


def figures(
    clips: list[AudioClip], texts: list[str], seconds: float, audio_s: float, base: dict[str, Any]
) -> dict[str, Any]:
    counts = [
        clip_error_counts(c.language, c.reference, t) for c, t in zip(clips, texts, strict=True)
    ]
    errors, words = [e for e, _ in counts], [w for _, w in counts]
    scored = [i for i, w in enumerate(words) if w > 0]  # as the corpus WER: no-word clips out
    interval = wer_interval([errors[i] for i in scored], [words[i] for i in scored])
    per_lang = {}
    for lang in sorted({c.language for c in clips}):
        mine = [n for c, n in zip(clips, counts, strict=True) if c.language == lang]
        per_lang[lang] = 100 * sum(e for e, _ in mine) / max(1, sum(w for _, w in mine))
    out: dict[str, Any] = {
        "wer": 100 * interval.estimate if interval else None,
        "wer_low": 100 * interval.low if interval else None,
        "wer_high": 100 * interval.high if interval else None,
        "wer_per_language": per_lang,
        "loops": sum(compression_ratio(t) > LOOP_RATIO for t in texts),
        "seconds_per_clip": seconds / len(clips),
        "seconds_per_audio_second": seconds / audio_s,
        "errors": errors,
        "words": words,
    }
    if base:
        keep = [i for i, w in enumerate(words) if w > 0]
        diff = paired_bootstrap(
            [base["errors"][i] for i in keep], [errors[i] for i in keep], [words[i] for i in keep]
        )
        out["minus_baseline"] = diff and {
            "estimate": 100 * diff.estimate, "low": 100 * diff.low, "high": 100 * diff.high
        }  # fmt: skip
        out["speedup_over_baseline"] = base["seconds_per_clip"] / out["seconds_per_clip"]
    return out


def peak_memory(row: str, models: dict[str, Path], project: Path) -> float | None:
    """Peak resident MB of ``row`` alone in a fresh process (load + 8 clips)."""
    spec = json.dumps({"row": row, "models": {k: str(v) for k, v in models.items()}})
    cmd = [sys.executable, "-m", "bench.deployed", "--memory-row", spec, "--project", str(project)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("peak_rss_mb "):
            return float(line.split()[1])
    print(f"memory of {row}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
    return None


def memory_row(spec: str, project: Path) -> None:
    raw = json.loads(spec)
    torch.set_num_threads(THREADS)
    clips = next(iter(test_clips(project, 2).values()))[:8]
    decode = make_row(raw["row"], {k: Path(v) for k, v in raw["models"].items()})
    for clip in clips:
        decode([load_audio(clip.path)], clip.language)
    print(f"peak_rss_mb {vm_hwm_mb():.1f}")


def vm_hwm_mb() -> float:
    """This process's peak resident memory (Linux VmHWM: unlike ``ru_maxrss`` it is not carried
    over from the parent through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[], help="NAME=DIR or NAME=pypi:whisper-base")
    ap.add_argument("--torch", nargs="*", default=[], help="these models also on transformers")
    ap.add_argument("--project", type=Path, default=PROJECT)
    ap.add_argument("--n", type=int, default=60, help="clips a language of each test split")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "deployed.json")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--memory-row", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_row:
        memory_row(args.memory_row, args.project)
        return 0
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory(prefix="deployed-") as tmp:  # converted hub/pypi models
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    """The benchmark (``main``'s arguments; ``work``: where converted models are saved)."""
    models = {k: model_dir(v, work) for k, v in (m.split("=", 1) for m in args.models)}
    rows = [BASELINE]  # at any batch: its transcribe takes one file, the batch's one by one
    rows += [f"{name} ct2" for name in models] + [f"{name} torch" for name in args.torch]
    decoders = {row: make_row(row, models) for row in rows}
    result: dict[str, Any] = {
        **provenance("bench.deployed"),
        "batch": args.batch,
        "threads": THREADS,
        "models": {k: str(v) for k, v in models.items()},
        "sets": {},
    }
    for set_name, clips in test_clips(args.project, args.n).items():
        audio = [load_audio(c.path) for c in clips]
        audio_s = sum(a.size for a in audio) / SAMPLE_RATE
        texts: dict[str, list[str]] = {row: [""] * len(clips) for row in rows}
        seconds = dict.fromkeys(rows, 0.0)
        for idx in batches(clips, args.batch):
            for row in rows:  # interleaved
                start = time.perf_counter()
                out = decoders[row]([audio[i] for i in idx], clips[idx[0]].language)
                seconds[row] += time.perf_counter() - start
                for i, text in zip(idx, out, strict=True):
                    texts[row][i] = text
        base: dict[str, Any] = {}
        set_rows: dict[str, Any] = {}
        for row in rows:
            set_rows[row] = figures(clips, texts[row], seconds[row], audio_s, base)
            if row == rows[0]:
                base = set_rows[row]
        result["sets"][set_name] = {
            "clips": len(clips),
            "audio_seconds": audio_s,
            "baseline": rows[0],
            "rows": {
                r: {k: v for k, v in f.items() if k not in ("errors", "words")}
                for r, f in set_rows.items()
            },
            "transcripts": [
                {"id": c.id, "language": c.language, "reference": c.reference}
                | {r: texts[r][i] for r in rows}
                for i, c in enumerate(clips)
            ],
        }
        write_result(args.out, result)
    if not args.no_memory:
        result["peak_rss_mb"] = {row: peak_memory(row, models, args.project) for row in rows}
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
