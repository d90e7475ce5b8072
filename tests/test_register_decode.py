"""A registered model decodes as the evaluation did: ``distilflow_decode.json`` (the token budget
``evaluate.max_new_tokens`` and the repetition guard of ``decode``) is written into the model
directory at registration and honoured by ``RegisteredWhisper.from_dir`` and ``load_registered``;
an explicit argument wins, and a directory without the file keeps the defaults. Transcribing
prints no transformers warning."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distilflow.config import DecodeConfig, RegisterConfig, TrackingConfig, load_params
from distilflow.decoding.generate_args import token_budget
from distilflow.decoding.longform import LongForm
from distilflow.decoding.loop_guard import DEFAULT_GUARD, NO_GUARD, LoopGuard
from distilflow.lineage import Lineage
from distilflow.register.consumer import RegisteredWhisper
from distilflow.register.decode_file import (
    DECODE_FILE,
    ServingDecode,
    read_decode,
    serving_decode,
    write_decode,
)
from distilflow.register.release import assemble
from distilflow.student.report import StudentReport, StudentSummary, TeacherSummary
from distilflow.testing import save_tiny_whisper

from .helpers import read_params, write_params

NAME = "decode-student"
RECORDED = ServingDecode(max_new_tokens=7, guard=LoopGuard(min_repeats=4, min_tokens=9))


def clip(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
    return tone.astype(np.float32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# --- the side file ----------------------------------------------------------------------------


def test_side_file_format_and_defaults(tmp_path: Path) -> None:
    settings = serving_decode(96, DecodeConfig(loop_repeats=0, loop_min_tokens=5))
    assert settings == ServingDecode(96, LoopGuard(min_repeats=0, min_tokens=5))
    path = write_decode(tmp_path, settings)
    assert path == tmp_path / DECODE_FILE == tmp_path / "distilflow_decode.json"
    assert json.loads(path.read_text("utf-8")) == {
        "compression_ratio_threshold": 1.35,
        "condition_on_prev_tokens": False,
        "logprob_threshold": -1.0,
        "loop_min_tokens": 5,
        "loop_repeats": 0,
        "max_new_tokens": 96,
        "no_speech_threshold": 0.6,
        "temperatures": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    }
    assert read_decode(tmp_path) == settings
    assert not read_decode(tmp_path).guard.enabled

    assert read_decode(tmp_path / "elsewhere") == ServingDecode(128, DEFAULT_GUARD)  # no file
    path.write_text(json.dumps({"max_new_tokens": 64, "future_key": "x"}), "utf-8")
    assert read_decode(tmp_path) == ServingDecode(64, DEFAULT_GUARD)  # missing keys: defaults
    path.write_text(json.dumps({"temperatures": [0.0], "no_speech_threshold": None}), "utf-8")
    greedy = read_decode(tmp_path).longform  # an older file's keys, or some: defaults for others
    assert greedy == LongForm(temperatures=(0.0,), no_speech_threshold=None)
    assert greedy.generate_kwargs()["temperature"] == 0.0
    bad_files: list[Any] = [
        {"max_new_tokens": 0},
        {"loop_repeats": 1},
        {"loop_min_tokens": "12"},
        [1],
        {"temperatures": [0.4, 0.2]},
        {"temperatures": "0.0"},
        {"compression_ratio_threshold": "high"},
        {"no_speech_threshold": 1.5},
        {"condition_on_prev_tokens": 1},
    ]
    for bad in bad_files:
        path.write_text(json.dumps(bad), "utf-8")
        with pytest.raises(ValueError, match=DECODE_FILE):
            read_decode(tmp_path)


def test_assemble_adds_only_the_side_file(tiny_dir: Path, tmp_path: Path) -> None:
    plain = assemble(tiny_dir, tmp_path / "no-experts", [], tmp_path / "plain")
    assert files_of(plain) == files_of(tiny_dir)  # without decode: a byte-identical copy
    release = assemble(tiny_dir, tmp_path / "no-experts", [], tmp_path / "release", RECORDED)
    files = files_of(release)
    assert json.loads(files.pop(DECODE_FILE)) == RECORDED.to_dict()
    assert files == files_of(tiny_dir)  # every other file byte-identical to the student's
    assert not (tiny_dir / DECODE_FILE).exists()  # the student's own directory is untouched


# --- the consumer -----------------------------------------------------------------------------


def budgets_of(model: RegisteredWhisper) -> list[dict[str, Any]]:
    """Record what ``model.model.generate`` is called with (and still call it)."""
    calls: list[dict[str, Any]] = []
    generate = model.model.generate

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return generate(*args, **kwargs)

    model.model.generate = recording  # type: ignore[method-assign]
    return calls


def test_from_dir_decodes_as_recorded_and_arguments_win(tiny_dir: Path, tmp_path: Path) -> None:
    default = RegisteredWhisper.from_dir(tiny_dir)  # no side file: today's defaults
    assert (default.max_new_tokens, default.guard) == (128, DEFAULT_GUARD)

    release = assemble(tiny_dir, tmp_path / "none", [], tmp_path / "release", RECORDED)
    model = RegisteredWhisper.from_dir(release)
    assert (model.max_new_tokens, model.guard) == (7, RECORDED.guard)
    calls = budgets_of(model)
    model.transcribe(clip(), language="fr")
    assert calls[-1]["max_length"] == 7  # Whisper's generate counts it after the prompt
    assert calls[-1]["logits_processor"][0].guard == RECORDED.guard
    model.transcribe(clip(), language="fr", max_new_tokens=3)  # a call's own budget wins
    assert calls[-1]["max_length"] == 3

    mine = RegisteredWhisper.from_dir(release, max_new_tokens=5, guard=NO_GUARD)
    assert (mine.max_new_tokens, mine.guard) == (5, NO_GUARD)
    calls = budgets_of(mine)
    mine.transcribe(clip(), language="fr")
    assert calls[-1]["max_length"] == 5 and len(calls[-1]["logits_processor"]) == 0


@pytest.mark.parametrize("language", ["fr", None])
def test_token_budget_is_max_new_tokens(tiny_dir: Path, language: str | None) -> None:
    """``max_length`` as Whisper reads it decodes exactly what ``max_new_tokens`` does."""
    model = RegisteredWhisper.from_dir(tiny_dir)
    features = model.batch_features([model.pcm(clip(3.0, seed=1)), model.pcm(clip(1.0))])
    for budget in (1, 6, 20):
        kwargs: dict[str, Any] = {"language": language, "task": "transcribe"}
        expected = model.model.generate(features, max_new_tokens=budget, **kwargs)
        got = model.model.generate(features, **token_budget(budget), **kwargs)
        assert torch.equal(got, expected)
        assert got.shape[-1] <= budget + 4  # at most the prompt (kept or not) and the budget


UPSTREAM_ONCE = "Passing `generation_config` together with generation-related arguments"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def transformers_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Records]:
    """Transformers' log records at WARNING and above (tasks/_env.py makes it ERROR by default)."""
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "warning")
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    handler = Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        hf_logging.set_verbosity(level)


def test_transcribe_prints_no_warning(tiny_dir: Path, transformers_warnings: Records) -> None:
    model = RegisteredWhisper.from_dir(tiny_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for language in ("fr", None, "fr"):
            model.transcribe(clip(), language=language, max_new_tokens=6)
        model.transcribe_many([clip(), clip(40.0)], language="fr")  # greedy, and long-form
        model.segments(clip(3.0), language="fr")  # timestamps on short audio
    messages = [r.getMessage() for r in transformers_warnings.records if r.levelno >= 30]
    # Whisper's own generate() passes suppress_tokens together with its generation_config to
    # GenerationMixin.generate (transformers 5): a deprecation notice logged once per process
    # (logger.warning_once), not on each call, and beyond a caller's reach.
    upstream = [m for m in messages if m.startswith(UPSTREAM_ONCE)]
    assert len(upstream) <= 1
    assert [m for m in messages if not m.startswith(UPSTREAM_ONCE)] == []


def test_dev_decoding_prints_no_warning(tiny_dir: Path, transformers_warnings: Records) -> None:
    """The training stages' dev transcripts (from encoder states) keep the budget quietly."""
    from distilflow.decoding.greedy import transcribe_states

    model = RegisteredWhisper.from_dir(tiny_dir)
    features = model.batch_features([model.pcm(clip(2.0)), model.pcm(clip(1.0, seed=1))])
    with torch.no_grad():
        states = model.model.get_encoder()(features).last_hidden_state
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        texts = transcribe_states(model.model, model.processor, states, "fr", 5, NO_GUARD)
    assert len(texts) == 2
    messages = [r.getMessage() for r in transformers_warnings.records if r.levelno >= 30]
    assert [m for m in messages if not m.startswith(UPSTREAM_ONCE)] == []


# --- registration and load_registered ---------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    uri: str  # tracking (and registry) URI
    release: Path  # the registered model directory (with the side file)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[Registered]:
    from distilflow.register.registry import Candidate, register_model_dir

    root = tmp_path_factory.mktemp("registry")
    release = assemble(tiny_dir, root / "none", [], root / "release", RECORDED)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        tracking = TrackingConfig(uri=f"sqlite:///{root / 'mlflow.db'}", experiment="decode")
        cfg = RegisterConfig(model_name=NAME, tolerance=0.02, out_dir=str(root / "out"))
        register_model_dir(tracking, cfg, Candidate(release, {"fr": 0.5}, {"git_commit": "c"}))
        yield Registered(tracking.uri, release)


def test_load_registered_decodes_as_recorded(registered: Registered, tmp_path: Path) -> None:
    import mlflow

    from distilflow.register.download import load_registered

    uri = f"models:/{NAME}@champion"
    model = load_registered(uri, tmp_path / "cache", tracking=registered.uri)
    assert (model.directory / DECODE_FILE).read_bytes() == (
        registered.release / DECODE_FILE
    ).read_bytes()
    assert (model.max_new_tokens, model.guard) == (7, RECORDED.guard)
    mine = load_registered(
        uri, tmp_path / "cache", tracking=registered.uri, max_new_tokens=3, guard=NO_GUARD
    )
    assert (mine.max_new_tokens, mine.guard) == (3, NO_GUARD)

    mlflow.set_tracking_uri(registered.uri)
    params = mlflow.models.get_model_info(uri).signature.params
    assert params is not None and params.params[0].default == 7  # the pyfunc's default budget
    pyfunc = mlflow.pyfunc.load_model(uri)
    audio = clip()
    assert pyfunc.predict({"audio": [audio], "language": ["fr"]}) == [
        model.transcribe(audio, language="fr")
    ]


def test_register_stage_writes_the_side_file(tiny_dir: Path, tmp_path: Path) -> None:
    """The register task's candidate: the student copied to ``register.out_dir/model`` with the
    evaluation's decoding; the student stage's own directory is left as it was."""
    import shutil

    from tasks.register import student_candidate

    raw = read_params()
    raw["student"]["out_dir"] = str(tmp_path / "student")
    raw["register"]["out_dir"] = str(tmp_path / "registry")
    raw["evaluate"]["out_dir"] = str(tmp_path / "evaluate")
    raw["evaluate"]["max_new_tokens"] = 77
    raw["decode"] = {"loop_repeats": 5, "loop_min_tokens": 20}
    params = load_params(write_params(tmp_path / "params.yaml", raw))
    student = tmp_path / "student" / "model"
    shutil.copytree(tiny_dir, student)
    StudentReport(
        TeacherSummary("t", "t0", {"fr": 0.3}, 0.3, 20),
        StudentSummary([0], "padded", 10, 2, {"fr": 0.4}, 0.4),
        train_clips=5,
        dev_clips=1,
        train_languages={"fr": 5},
        steps=2,
        resumed=False,
        encoder_states_computed=0,
        history=[],
        lineage=Lineage("c", "p", "i"),
    ).write(tmp_path / "student" / "report.json")

    cand = student_candidate(params, tmp_path / "dvc.lock")
    assert cand.model_dir == tmp_path / "registry" / "model"
    assert read_decode(cand.model_dir) == ServingDecode(77, LoopGuard(5, 20))
    assert files_of(student) == files_of(tiny_dir)  # no side file in the student's directory
    files = files_of(cand.model_dir)
    del files[DECODE_FILE]
    assert files == files_of(tiny_dir)
