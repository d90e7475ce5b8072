"""The MLflow registry on the embedded default (SQLite in tmp_path): register, gate, aliases,
recorded decisions, and a consumer transcribing numpy audio through ``models:/name@champion``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from transformers import LogitsProcessorList, WhisperForConditionalGeneration, WhisperProcessor

from distilflow.config import RegisterConfig, TrackingConfig, load_params
from distilflow.decoding.loop_guard import LoopGuard
from distilflow.lineage import Lineage
from distilflow.register.consumer import RegisteredWhisper
from distilflow.register.download import load_registered
from distilflow.register.registry import Candidate, Registration, register_model_dir
from distilflow.student.build import SIDE_FILE
from distilflow.student.report import StudentReport, StudentSummary, TeacherSummary
from distilflow.testing import save_tiny_whisper

from .helpers import read_params, write_params

NAME = "test-student"
TOKENS = 12  # max_new_tokens: a random model babbles; keep it short


def model_dir(root: Path, seed: int, experts: bool = False) -> Path:
    """A tiny random Whisper as save_student writes it (side file, optional experts/)."""
    d = save_tiny_whisper(root / f"model-{seed}", seed=seed)
    (d / SIDE_FILE).write_text(json.dumps({"layer_ids": [0, 1], "teacher_id": "t0"}), "utf-8")
    if experts:  # real fr experts, moved off their start so they change the output
        import torch

        from distilflow.models import load_whisper
        from distilflow.models.experts import (
            ExpertSpec,
            attach_language,
            expert_parameters,
            save_experts,
        )

        model = load_whisper(str(d)).model
        spec = ExpertSpec("lowrank", 2, True, 4, 0.0)
        attach_language(model, spec)
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in expert_parameters(model):
                p.add_(0.5 * torch.randn_like(p))
        save_experts(model, d / "experts" / "fr.safetensors", "fr", spec, "base")
    return d


def clip(seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def greedy(directory: Path, audio: np.ndarray, language: str) -> str:
    """transformers' own greedy transcript of ``audio`` by the model in ``directory``, with the
    repetition guard consumers decode with (the tiny random models loop)."""
    model = WhisperForConditionalGeneration.from_pretrained(directory).eval()
    processor = WhisperProcessor.from_pretrained(directory)
    feats = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt")
    guard = LoopGuard()
    with torch.no_grad():
        ids = model.generate(
            feats.input_features,
            language=language,
            task="transcribe",
            max_new_tokens=TOKENS,
            logits_processor=LogitsProcessorList(guard.processors(model)),
        )
    rows = guard.text_rows(ids, model)
    text: str = processor.tokenizer.batch_decode(rows, skip_special_tokens=True)[0]
    return text.strip()


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrackingConfig:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    return TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="registry-test")


def lineage(n: int) -> dict[str, Any]:
    return {
        "git_commit": f"c{n}",
        "params_hash": f"p{n}",
        "input_hash": f"i{n}",
        "teacher_id": "t0",
    }


@dataclass(frozen=True)
class Registered:
    """Two versions registered in one store: v1 promoted, v2 (with experts/) rejected."""

    uri: str  # tracking (and registry) URI
    first: Registration
    second: Registration
    second_dir: Path


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        tracking = TrackingConfig(uri=f"sqlite:///{root / 'mlflow.db'}", experiment="registry")
        cfg = RegisterConfig(model_name=NAME, tolerance=0.02, out_dir=str(root / "registry"))
        first = register_model_dir(
            tracking, cfg, Candidate(model_dir(root, 0), {"en": 0.5, "fr": 0.6}, lineage(1))
        )
        second_dir = model_dir(root, 1, experts=True)
        pages = (root / "report.md", root / "explorer.html")
        pages[0].write_text("# Evaluation\n")
        pages[1].write_text("<!doctype html><title>clips</title>\n")
        cand = Candidate(
            second_dir, {"en": 0.3, "fr": 0.7}, lineage(2), data={"x": 1}, evaluation_files=pages
        )
        yield Registered(tracking.uri, first, register_model_dir(tracking, cfg, cand), second_dir)


def test_gate_aliases_and_recorded_decisions(registered: Registered) -> None:
    import mlflow

    first, second = registered.first, registered.second
    assert (first.version, first.decision.promote) == ("1", True)
    assert first.aliases == ["challenger", "staging", "champion", "production"]
    assert (second.version, second.decision.promote) == ("2", False)
    assert second.aliases == ["challenger", "staging"]
    assert second.decision.champion_version == "1"
    assert second.decision.deltas == pytest.approx({"en": -0.2, "fr": 0.1})

    client = mlflow.MlflowClient(tracking_uri=registered.uri, registry_uri=registered.uri)
    aliases = {alias: str(v) for alias, v in client.get_registered_model(NAME).aliases.items()}
    assert aliases == {"champion": "1", "production": "1", "challenger": "2", "staging": "2"}
    v2 = client.get_model_version(NAME, "2")
    assert v2.tags["decision"] == "rejected" and v2.tags["decision_against"] == "1"
    assert v2.tags["decision_reasons"].startswith("fr: WER regresses by +0.1000")
    assert (v2.tags["kind"], v2.tags["git_commit"], v2.tags["input_hash"]) == (
        "student",
        "c2",
        "i2",
    )
    assert json.loads(v2.tags["wer"]) == {"en": 0.3, "fr": 0.7}
    assert v2.description.startswith(f"# {NAME} version 2") and "## Limitations" in v2.description
    assert client.get_model_version(NAME, "1").tags["decision"] == "promoted"
    run = client.get_run(second.run_id)
    assert run.data.tags["params_hash"] == "p2" and run.data.metrics["dev_wer.fr"] == 0.7
    mlflow.set_tracking_uri(registered.uri)
    recorded = mlflow.artifacts.load_dict(f"runs:/{second.run_id}/decision.json")
    assert recorded == json.loads(json.dumps(second.to_dict()))
    card = mlflow.artifacts.load_text(f"runs:/{second.run_id}/model_card.md")
    assert card == v2.description
    page = mlflow.artifacts.load_text(f"runs:/{second.run_id}/evaluation/explorer.html")
    assert page.startswith("<!doctype html>")  # the evaluation's pages travel with the run
    assert mlflow.artifacts.load_text(f"runs:/{second.run_id}/evaluation/report.md")


def test_consumer_transcribes_the_champion(registered: Registered, tmp_path: Path) -> None:
    import mlflow

    audio = clip()
    cache = tmp_path / "cache"
    champion = load_registered(f"models:/{NAME}@champion", cache, tracking=registered.uri)
    assert isinstance(champion, RegisteredWhisper) and champion.experts_dir is None
    text = champion.transcribe(audio, language="fr", max_new_tokens=TOKENS)
    assert isinstance(text, str)
    assert text == greedy(model_dir(tmp_path / "again", 0), audio, "fr")
    assert (champion.directory / SIDE_FILE).is_file()
    again = load_registered(f"models:/{NAME}@champion", cache, tracking=registered.uri)
    assert again.directory == champion.directory  # a registry version is downloaded once

    mlflow.set_tracking_uri(registered.uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")  # generic MLflow consumers
    predicted = pyfunc.predict({"audio": [audio], "language": ["fr"]}, {"max_new_tokens": TOKENS})
    assert predicted == [text]


def test_experts_folder_calls_the_hook(registered: Registered, tmp_path: Path) -> None:
    audio = clip()
    challenger = load_registered(f"models:/{NAME}@challenger", tmp_path, tracking=registered.uri)
    assert challenger.experts_dir is not None
    assert (challenger.experts_dir / "fr.safetensors").is_file()
    calls: list[tuple[Path, str | None]] = []
    challenger.router = lambda model, d, lang: calls.append((d, lang))
    out = challenger.transcribe(audio, language="fr", max_new_tokens=TOKENS)
    assert calls == [(challenger.experts_dir, "fr")]
    assert out == greedy(registered.second_dir, audio, "fr")
    challenger.router = RegisteredWhisper.router  # the default hook: fr's experts
    routed = challenger.transcribe(audio, language="fr", max_new_tokens=TOKENS)
    from distilflow.models import load_whisper
    from distilflow.models.experts import use_language

    reference = load_whisper(str(registered.second_dir)).model
    assert use_language(reference, registered.second_dir / "experts", "fr")
    ids = reference.generate(
        challenger.features(audio), language="fr", task="transcribe", max_new_tokens=TOKENS
    )
    expected = challenger.processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
    assert routed == expected
    # a language without experts decodes with the shared path: the plain student
    assert challenger.transcribe(audio, language="en", max_new_tokens=TOKENS) == greedy(
        registered.second_dir, audio, "en"
    )


def test_ctranslate2_backend_serves_a_language_with_its_experts_merged(
    registered: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A champion with experts on the ctranslate2 backend: a language with experts decodes
    through its own int8 conversion, the experts merged (the same tokens as converting the
    merged torch model); a language without, through the plain conversion."""
    from distilflow.decoding.ct2 import Ct2Whisper
    from distilflow.export.convert import export_ct2
    from distilflow.models import load_whisper
    from distilflow.models.experts import merge_language, use_language

    monkeypatch.setenv("DISTILFLOW_CACHE", str(tmp_path / "cache"))
    audio = clip()
    uri = f"models:/{NAME}@challenger"
    fast = load_registered(uri, tmp_path / "dl", tracking=registered.uri, backend="ctranslate2")
    fr = fast.ct2_for("fr")
    assert fast.ct2 is not None and fr is not None and fr is not fast.ct2
    assert fast.ct2_for("fr") is fr and fast.ct2_for("en") is fast.ct2  # converted once
    assert (
        json.loads((fr.directory / "distilflow_export.json").read_text("utf-8"))["language"] == "fr"
    )
    reference = load_whisper(str(registered.second_dir)).model
    assert use_language(reference, registered.second_dir / "experts", "fr")
    merged = export_ct2(
        None, tmp_path / "merged", "int8", model=(merge_language(reference), fast.processor)
    )
    expected = Ct2Whisper(merged, reference.generation_config).generate(
        fast.features(audio), "fr", TOKENS
    )
    tokenizer = fast.processor.tokenizer
    want = tokenizer.decode(fast.guard.trim(expected[0]), skip_special_tokens=True).strip()
    assert fast.transcribe(audio, "fr", max_new_tokens=TOKENS) == want
    plain = fast.ct2.generate(fast.features(audio), "en", TOKENS)
    want_en = tokenizer.decode(fast.guard.trim(plain[0]), skip_special_tokens=True).strip()
    assert fast.transcribe(audio, "en", max_new_tokens=TOKENS) == want_en


def test_register_task_writes_decision_json(
    tracking: TrackingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Prefect task's body (no server): report.json metrics, dvc.lock hash, decision.json."""
    from tasks.register import register_student, student_candidate

    raw = read_params()
    raw["student"]["out_dir"] = str(tmp_path / "student")
    raw["register"]["out_dir"] = str(tmp_path / "registry")
    raw["evaluate"]["out_dir"] = str(tmp_path / "evaluate")
    raw["tracking"]["uri"] = tracking.uri
    params = load_params(write_params(tmp_path / "params.yaml", raw))
    model_dir(tmp_path / "student", 0).rename(tmp_path / "student" / "model")
    StudentReport(
        TeacherSummary("pypi:whisper-base", "t0", {"en": 0.2}, 0.2, 20),
        StudentSummary([0], "padded", 10, 2, {"en": 0.25, "ru": float("nan")}, 0.25),
        train_clips=5,
        dev_clips=1,
        train_languages={"en": 5},
        steps=2,
        resumed=False,
        encoder_states_computed=0,
        history=[],
        lineage=Lineage(**lineage(1)),
    ).write(tmp_path / "student" / "report.json")
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        yaml.safe_dump(
            {"stages": {"student": {"deps": [{"path": params.filter.out_dir, "md5": "abc.dir"}]}}}
        ),
        encoding="utf-8",
    )
    cand = student_candidate(params, lock)
    assert cand.lineage["dvc_input_md5"] == "abc.dir" and cand.data["train_clips"] == 5
    monkeypatch.chdir(tmp_path)  # dvc.lock is read relative to the working directory
    record = register_student.fn(params)
    written = json.loads((tmp_path / "registry" / "decision.json").read_text(encoding="utf-8"))
    assert written == record
    assert written["decision"]["verdict"] == "promoted" and written["version"] == "1"
    assert written["decision"]["challenger_wer"] == {"en": 0.25, "ru": None}
    assert written["model_uri"] == f"models:/{params.register.model_name}/1"

    # with the evaluation's figures: they must be those of the weights registered
    from distilflow.evaluate.results import StaleResultsError
    from distilflow.models.load import transformers_dir_fingerprint

    evaluated = Path(params.evaluate.out_dir)
    evaluated.mkdir(parents=True)
    worse = {"languages": {"en": {"wer": 0.3}}}  # experts that do not ship
    rows = {"student": {"languages": {"en": {"wer": 0.2}}}, "experts": worse}
    (evaluated / "metrics.json").write_text(json.dumps({"sets": {"dev": rows}}), "utf-8")
    scored = {"models": {"student": {"id": "weights-of-an-older-student"}}}
    (evaluated / "report.json").write_text(json.dumps(scored), "utf-8")
    with pytest.raises(StaleResultsError, match="run the evaluation again before registering"):
        student_candidate(params, lock)
    scored["models"]["student"]["id"] = transformers_dir_fingerprint(tmp_path / "student" / "model")
    (evaluated / "report.json").write_text(json.dumps(scored), "utf-8")
    assert student_candidate(params, lock).wer == {"en": 0.2}
    # the per-clip errors behind each language's figure: the student's where experts do not ship
    from distilflow.register.wer_basis import clip_key

    lines = [
        {
            "model": m,
            "set": "dev",
            "id": "h1",
            "language": "en",
            "reference": "a b",
            "hypothesis": h,
        }
        for m, h in (("student", "a"), ("experts", "a b c"))
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (evaluated / "transcripts.jsonl").write_text(text, "utf-8")
    cand = student_candidate(params, lock)
    assert cand.clip_errors == {"en": {clip_key("h1", "a b"): (1, 2)}}
    assert set(cand.wer_basis) == {"en"}


def test_task_retries_io_failures_only() -> None:
    from prefect.states import Failed

    from tasks.register import _transient

    assert _transient(None, None, Failed(data=ConnectionError("server gone")))  # type: ignore[arg-type]
    assert not _transient(None, None, Failed(data=FileNotFoundError("no model")))  # type: ignore[arg-type]
