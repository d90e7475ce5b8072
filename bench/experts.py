"""Per-language experts against their baselines, side by side in one process, on real speech.

    python -m bench.experts ../shared/data/asterisk-dev [--student data/student/model]
        [--languages es fr it ru en] [--train 40] [--test 20] [--steps 30] [--encoder] [--gates]

For each language: ``--train`` clips pseudo-labelled by the teacher (greedy, language forced)
and ``--test`` clips scored against the human references, none of them in the demo corpus the
student was distilled on and the two sets disjoint. On the same student, data, step budget and
loss (the experts' distillation term): the student alone, full fine-tuning and LoRA on the FFNs
(each at its own learning rate option, ``experts.finetune_lr`` and ``experts.lora_lr``), experts
without distillation (β = 0), experts with distillation (JS), and, with ``--text-model``,
experts + the Distill-L2S loss; with ``--gates``, the experts' gate options too (the soft gate
with its noise ramp, the soft gate opened at start, expert dropout). Each experts row is also
scored with the soft gate sigmoid(G) in place of the hard gate served (``wer_soft_gate``). No
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import provenance, write_result
from distilflow.config import ExpertsConfig, load_params
from distilflow.decoding.greedy import EvalClip
from distilflow.experts.schedule import method_lr
from distilflow.experts.stage import LanguageRun, make_trainer, prepare_model
from distilflow.lineage import combine_hashes
from distilflow.models import load_whisper
from distilflow.models.device import count_parameters
from distilflow.models.experts import set_soft_serving
from distilflow.text import error_rate_corpus
from distilflow.training.loop import NullTracker, TrainExample
from distilflow.training.prepare import eos_of, frozen_states, load_frozen_teacher, trainable_states
from distilflow.training.states import EncoderStates, train_example

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")  # the benchmark's device
METHODS = ("student", "finetune", "lora", "experts_no_kd", "experts_kd", "experts_kd_l2s")
GATE_VARIANTS = ("experts_kd_soft", "experts_kd_soft_open", "experts_kd_dropout")  # --gates


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
            out.append([t for t in row if t < eos_of(gen)])
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
    by_method: dict[str, dict[str, Any]] = {  # the learning rate: the method's own option
        "finetune": {"method": "finetune"},  # the experts' loss, KD term included
        "lora": {"method": "lora"},
        "experts_no_kd": {"method": "experts", "beta_kd": 0.0},
        "experts_kd": {"method": "experts"},  # the configured gate (experts.gate)
        "experts_kd_l2s": {"method": "experts", "l2s_weight": 0.1, "text_model": text},
        # gate options, all else as experts_kd
        "experts_kd_soft": {"method": "experts", "gate": "soft", "gate_bias": 0.0},
        "experts_kd_soft_open": {"method": "experts", "gate": "soft", "gate_bias": 3.0},
        "experts_kd_dropout": {"method": "experts", "expert_dropout": 0.2},
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
    parser.add_argument("--gates", action="store_true", help="the experts' gate options too")
    parser.add_argument("--out", type=Path, default=REPO / "docs/bench/experts.json")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    cache = REPO / params.paths.cache_dir
    teacher_loaded = load_frozen_teacher(params.label.model, cache, CPU)
    teacher = teacher_loaded.model
    base = load_whisper(args.student, cache_dir=cache)
    methods = [m for m in METHODS if m != "experts_kd_l2s" or args.text_model]
    methods += list(GATE_VARIANTS) if args.gates else []
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
                "gate": params.experts.gate,
                "lr": {
                    m: method_lr(variant(params.experts, m, 1, False, ""))
                    for m in methods
                    if m != "student"
                },
            },
            "results": results,
        },
    )


@dataclass
class LanguageData:
    """One language's clips: train examples (the teacher's pseudo-labels), test clips."""

    language: str
    paths: dict[str, str]  # content hash -> audio file, train and test clips
    train: list[TrainExample]
    dev: list[EvalClip]
    teacher_states: EncoderStates
    durations: dict[str, float]  # of the train clips
    texts: dict[str, str]  # the train clips' references (what L2S's text model reads)
    data_hash: str  # of the train clips


def language_data(args: Any, teacher: Any, fe: Any, lang: str, cache: Path) -> LanguageData:
    """Pick, hash and pseudo-label one language's clips; the teacher's states are cached."""
    train_rows, test_rows = pick_clips(args.corpus, lang, args.train, args.test)
    for r in train_rows + test_rows:  # cache key: the file's content hash
        r["key"] = hashlib.sha256((args.corpus / r["file_name"]).read_bytes()).hexdigest()
    paths = {r["key"]: str(args.corpus / r["file_name"]) for r in train_rows + test_rows}
    t_states = frozen_states(teacher.model.encoder, fe, paths, cache, CPU)
    keys = [r["key"] for r in train_rows]
    gen = teacher.generation_config
    labels = pseudo_labels(teacher, t_states, keys, lang)
    train = [
        train_example(key, lang, ids, gen, eos_of(gen))
        for key, ids in zip(keys, labels, strict=True)
    ]
    return LanguageData(
        lang,
        paths,
        train,
        [EvalClip(r["key"], lang, r["text"]) for r in test_rows],
        t_states,
        {r["key"]: float(r["duration_s"]) for r in train_rows},
        {r["key"]: r["text"] for r in train_rows},
        combine_hashes(keys),
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
    data = language_data(args, teacher, base.processor.feature_extractor, lang, cache)
    teacher_run = (
        trainable_states(teacher.model.encoder, data.teacher_states)
        if args.encoder
        else data.teacher_states
    )
    teacher_wer, teacher_s, forced = timed_eval(teacher, base.processor, data.dev, teacher_run, {})
    out: dict[str, Any] = {"teacher": {"wer": teacher_wer, "decode_s": teacher_s}}
    for method in methods:
        out[method] = run_method(args, cfg, method, teacher_loaded, base, data, forced, cache)
    ref = out["student"]
    for method in methods:  # the same forced token sequences for every method
        out[method]["decode_ratio"] = out[method]["decode_s"] / ref["decode_s"]
        out[method]["parameter_ratio"] = out[method]["parameters"] / ref["parameters"]
    return out


def run_method(
    args: Any,
    cfg: ExpertsConfig,
    method: str,
    teacher_loaded: Any,
    base: Any,
    data: LanguageData,
    forced: dict[str, list[int]],
    cache: Path,
) -> dict[str, Any]:
    """One method on a fresh copy of the student: trained (but ``student``), then scored."""
    student = copy.deepcopy(base.model)
    fe = base.processor.feature_extractor
    s_states = frozen_states(student.model.encoder, fe, data.paths, cache, CPU)
    train_s = 0.0
    if method != "student":
        mcfg = variant(cfg, method, args.steps, args.encoder, args.text_model)
        train_s = train_method(mcfg, teacher_loaded, base, student, s_states, data)
    # with --encoder every method (the student too) runs its own encoder when decoding
    states = trainable_states(student.model.encoder, s_states) if args.encoder else s_states
    wer, decode_s, _ = timed_eval(student, base.processor, data.dev, states, forced)
    out = {"wer": wer, "decode_s": decode_s, "train_s": train_s}
    if method.startswith("experts"):  # the same experts with the soft gate: the serving gap
        set_soft_serving(student, True)
        out["wer_soft_gate"] = timed_eval(student, base.processor, data.dev, states, forced)[0]
        set_soft_serving(student, False)
    return out | {"parameters": count_parameters(student)}


def train_method(
    cfg: ExpertsConfig,
    teacher_loaded: Any,
    base: Any,
    student: Any,
    s_states: EncoderStates,
    data: LanguageData,
) -> float:
    """Train ``student`` as the experts stage would (in a scratch folder); returns seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(cfg, out_dir=tmp)
        prepare_model(student, cfg)
        run = LanguageRun(
            data.language,
            teacher_loaded.model,
            student,
            base.processor,
            data.train,
            data.dev,
            data.teacher_states,
            s_states,
            data.durations,
            data.texts,
            base.fingerprint,
            teacher_loaded.fingerprint,
            data.data_hash,
        )
        start = time.perf_counter()
        make_trainer(cfg, run, Path(tmp)).run(NullTracker())
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
