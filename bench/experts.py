"""Per-language experts against their baselines, side by side in one process, on real speech.

    python -m bench.experts ../shared/data/asterisk-dev [--student data/student/model]
        [--languages es fr it ru en] [--train 40] [--test 20] [--steps 30] [--encoder]

For each language: ``--train`` clips pseudo-labelled by the teacher (greedy, language forced)
and ``--test`` clips scored against the human references, none of them in the demo corpus the
student was distilled on and the two sets disjoint. On the same student, data and step budget:
the student alone, full fine-tuning, LoRA on the FFNs, experts without distillation (β = 0),
experts with distillation (JS), and, with ``--text-model``, experts + the Distill-L2S loss. No
training step sees a test clip (one evaluation, at the last step, nothing is selected on it).
Decode time is the time of KV-cached decoding of the same token sequences (the teacher's
transcripts of the test clips) from the same encoder states for every method (a model that stops
early or loops would otherwise look faster or slower than its per-step cost), as a ratio to the
student alone; parameters at inference are
base + one language's.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import provenance, write_result
from distilflow.config import ExpertsConfig, load_params
from distilflow.decoding.greedy import EvalClip
from distilflow.experts.stage import LanguageRun, make_trainer, prepare_model
from distilflow.lineage import combine_hashes
from distilflow.models import load_whisper
from distilflow.models.device import count_parameters
from distilflow.models.encoder_cache import EncoderCache, module_hash
from distilflow.text import error_rate_corpus
from distilflow.training.data import decoder_example, prompt_ids
from distilflow.training.loop import NullTracker, TrainExample
from distilflow.training.states import EncoderStates, TrainableEncoderStates

REPO = Path(__file__).resolve().parents[1]
METHODS = ("student", "finetune", "lora", "experts_no_kd", "experts_kd", "experts_kd_l2s")


def pick_clips(corpus: Path, lang: str, n_train: int, n_test: int) -> tuple[list[Any], list[Any]]:
    """Disjoint train and test rows of one language, outside the demo corpus (seeded)."""
    demo = {json.loads(x)["file_name"] for x in (REPO / "demo/asterisk/metadata.jsonl").open()}
    rows = [json.loads(x) for x in (corpus / "metadata.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["language"] == lang and r["file_name"] not in demo]
    random.Random(f"bench-experts-{lang}").shuffle(rows)
    return rows[:n_train], rows[n_train : n_train + n_test]


def pseudo_labels(
    teacher: Any, states: EncoderStates, keys: list[str], lang: str
) -> list[list[int]]:
    """The teacher's greedy token ids (prompt and end token stripped) from cached states."""
    gen = teacher.generation_config
    out: list[list[int]] = []
    for i in range(0, len(keys), 8):
        with torch.no_grad():
            from transformers.modeling_outputs import BaseModelOutput

            ids = teacher.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=states(keys[i : i + 8])),
                language=lang,
                task="transcribe",
                max_new_tokens=96,
            )
        for row in ids.tolist():
            out.append([t for t in row if t < int(gen.eos_token_id)])
    return out


def variant(
    base: ExpertsConfig, method: str, steps: int, encoder: bool, text: str
) -> ExpertsConfig:
    """The config of one method on the common budget."""
    common = {
        "max_steps": steps,
        "eval_every": steps,
        "save_every": steps,
        "progress": False,
        "encoder": encoder,
        "warmup_steps": max(1, steps // 10),
    }
    by_method: dict[str, dict[str, Any]] = {
        "finetune": {"method": "finetune", "beta_kd": 0.0, "lr": 1e-4},  # the student's lr
        "lora": {"method": "lora", "beta_kd": 0.0},
        "experts_no_kd": {"method": "experts", "beta_kd": 0.0},
        "experts_kd": {"method": "experts"},
        "experts_kd_l2s": {"method": "experts", "l2s_weight": 0.1, "text_model": text},
    }
    return dataclasses.replace(base, **common, **by_method[method])


def forced_steps_time(model: Any, states: torch.Tensor, ids: list[int]) -> float:
    """Seconds of incremental (KV-cached) decoding of exactly ``ids``, one token a step.

    Every method decodes the same token sequence (the teacher's transcript), so the time
    compares per-step cost, not how long each model happens to talk.
    """
    past = None
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(len(ids)):
            out = model(
                encoder_outputs=(states,),
                decoder_input_ids=torch.tensor([ids[i : i + 1]]),
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
    return time.perf_counter() - start


def timed_eval(
    model: Any, processor: Any, dev: list[EvalClip], states: Any, forced: dict[str, list[int]]
) -> tuple[float, float, dict[str, list[int]]]:
    """(WER of greedy transcripts, seconds of forced decoding, the greedy token ids).

    ``forced``: per clip, the token sequence every method is timed on (``{}`` for the first
    model: its own greedy output is used and returned).
    """
    from transformers.modeling_outputs import BaseModelOutput

    model.eval()
    seconds, hyps, own = 0.0, [], {}
    for clip in dev:
        with torch.no_grad():
            enc = states([clip.hash])
            out = model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                language=clip.language,
                task="transcribe",
                max_new_tokens=64,
            )
            own[clip.hash] = out[0].tolist()
            seconds += forced_steps_time(model, enc, forced.get(clip.hash, own[clip.hash]))
        hyps.append(processor.tokenizer.decode(out[0], skip_special_tokens=True).strip())
    wer = error_rate_corpus(dev[0].language, [c.reference for c in dev], hyps)
    return wer, seconds, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--student", default="data/student/model")
    parser.add_argument("--languages", nargs="+", default=["es", "fr", "it", "ru", "en"])
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--encoder", action="store_true", help="experts/FT in the encoder too")
    parser.add_argument("--text-model", default="", help="L2S text encoder (hub id or dir)")
    parser.add_argument("--out", type=Path, default=REPO / "docs/bench/experts.json")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    cache = REPO / params.paths.cache_dir
    teacher_loaded = load_whisper(params.label.model, cache_dir=cache)
    teacher = teacher_loaded.model.eval()
    teacher.requires_grad_(False)
    base = load_whisper(args.student, cache_dir=cache)
    methods = [m for m in METHODS if m != "experts_kd_l2s" or args.text_model]
    results: dict[str, Any] = {}
    for lang in args.languages:
        results[lang] = run_language(
            args, params.experts, teacher, teacher_loaded, base, lang, methods, cache
        )
        print(json.dumps({lang: results[lang]}, indent=1))
    write_result(
        args.out,
        {
            "provenance": provenance("bench.experts"),
            "settings": {
                "train_clips": args.train,
                "test_clips": args.test,
                "steps": args.steps,
                "encoder": args.encoder,
                "student": args.student,
                "teacher": params.label.model,
                "batch_size": params.experts.batch_size,
                "form": params.experts.form,
                "rank": params.experts.rank,
            },
            "results": results,
        },
    )


def run_language(
    args: Any,
    cfg: ExpertsConfig,
    teacher: Any,
    teacher_loaded: Any,
    base: Any,
    lang: str,
    methods: list[str],
    cache: Path,
) -> dict[str, Any]:
    """Every method on one language; WER, decode-time ratio and inference parameters."""
    train_rows, test_rows = pick_clips(args.corpus, lang, args.train, args.test)
    for r in train_rows + test_rows:  # cache key: the file's content hash
        r["key"] = hashlib.sha256((args.corpus / r["file_name"]).read_bytes()).hexdigest()
    paths = {r["key"]: str(args.corpus / r["file_name"]) for r in train_rows + test_rows}
    fe = base.processor.feature_extractor
    t_states = EncoderStates(
        teacher.model.encoder,
        fe,
        paths,
        EncoderCache(cache / "encoder", module_hash(teacher.model.encoder)),
        torch.device("cpu"),
    )
    keys = [r["key"] for r in train_rows]
    gen = teacher.generation_config
    labels = pseudo_labels(teacher, t_states, keys, lang)
    train = []
    for key, ids in zip(keys, labels, strict=True):
        inputs, targets = decoder_example(ids, prompt_ids(gen, lang), int(gen.eos_token_id))
        train.append(TrainExample(key, lang, inputs, targets))
    dev = [EvalClip(r["key"], lang, r["text"]) for r in test_rows]
    teacher_run = (
        TrainableEncoderStates(teacher.model.encoder, fe, paths, None, torch.device("cpu"))
        if args.encoder
        else t_states
    )
    teacher_wer, teacher_s, forced = timed_eval(teacher, base.processor, dev, teacher_run, {})
    out: dict[str, Any] = {"teacher": {"wer": teacher_wer, "decode_s": teacher_s}}
    for method in methods:
        student = copy.deepcopy(base.model)
        s_states = EncoderStates(
            student.model.encoder,
            fe,
            paths,
            EncoderCache(cache / "encoder", module_hash(student.model.encoder)),
            torch.device("cpu"),
        )
        if method != "student":
            mcfg = variant(cfg, method, args.steps, args.encoder, args.text_model)
            with tempfile.TemporaryDirectory() as tmp:
                mcfg = dataclasses.replace(mcfg, out_dir=tmp)
                prepare_model(student, mcfg)
                run = LanguageRun(
                    lang,
                    teacher,
                    student,
                    base.processor,
                    train,
                    dev,
                    t_states,
                    s_states,
                    {r["key"]: float(r["duration_s"]) for r in train_rows},
                    {r["key"]: r["text"] for r in train_rows},
                    base.fingerprint,
                    teacher_loaded.fingerprint,
                    combine_hashes(keys),
                )
                start = time.perf_counter()
                make_trainer(mcfg, run, Path(tmp)).run(NullTracker())
                train_s = time.perf_counter() - start
        else:
            train_s = 0.0
        # with --encoder every method (the student too) runs its own encoder when decoding
        states = (
            TrainableEncoderStates(student.model.encoder, fe, paths, None, torch.device("cpu"))
            if args.encoder
            else s_states
        )
        wer, decode_s, _ = timed_eval(student, base.processor, dev, states, forced)
        out[method] = {
            "wer": wer,
            "decode_s": decode_s,
            "train_s": train_s,
            "parameters": count_parameters(student),
        }
    ref = out["student"]
    for method in methods:  # the same forced token sequences for every method
        out[method]["decode_ratio"] = out[method]["decode_s"] / ref["decode_s"]
        out[method]["parameter_ratio"] = out[method]["parameters"] / ref["parameters"]
    return out


if __name__ == "__main__":
    main()
