"""Pseudo-labelling and filtering on a tiny random Whisper: flows, cache, resume after kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from distilflow.label.cache import LabelCache
from distilflow.label.teacher import Clip, GenerationSettings, avg_logprobs, batches

from .helpers import DEMO_CORPUS, project_params, read_params, write_params


def test_batches_group_by_language_and_sort_by_length() -> None:
    clips = [
        Clip("a", "", "fr", 3.0),
        Clip("b", "", "en", 2.0),
        Clip("c", "", "fr", 1.0),
        Clip("d", "", None, 1.0),
        Clip("e", "", "en", 1.0),
        Clip("f", "", "fr", 2.0),
    ]
    got = [[c.hash for c in b] for b in batches(clips, 2)]
    assert got == [["e", "b"], ["c", "f"], ["a"], ["d"]]


def test_avg_logprob_counts_up_to_first_end_token() -> None:
    import torch

    logits = [torch.log(torch.tensor([[0.5, 0.5, 0.0 + 1e-9]])) for _ in range(3)]
    tokens = torch.tensor([[0, 1, 1]])  # token 1 is the end token: the third step is padding
    (avg,) = avg_logprobs(logits, tokens, eos=1)
    assert avg == pytest.approx(float(torch.log(torch.tensor(0.5))), rel=1e-4)


def test_settings_hash_changes_with_settings() -> None:
    a = GenerationSettings("transformers", 128, 1, False)
    assert a.hash() == GenerationSettings("transformers", 128, 1, False).hash()
    assert a.hash() != GenerationSettings("transformers", 128, 2, False).hash()
    assert a.hash() != GenerationSettings("ctranslate2", 128, 1, False).hash()
    # ctranslate2 labels cached before its whole token budget was decoded are not reused;
    # transformers labels keep the key they had (the settings' fields alone)
    ct2 = GenerationSettings("ctranslate2", 128, 1, False)
    assert ct2.hash() != earlier_key(ct2)
    assert a.hash() == earlier_key(a)


def earlier_key(settings: GenerationSettings) -> str:
    """The label cache key of before 2026-12-05: a hash of the settings' fields alone."""
    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()[:16]


def test_label_and_filter_flows(prefect_harness: None, tiny_dir: Path, tmp_path: Path) -> None:
    from flows.filter import filter_flow
    from flows.ingest import ingest_flow
    from flows.label import label_flow

    params = str(project_params(tmp_path, tiny_dir))
    ingest_flow(params)
    first = label_flow(params)
    assert first["clips"] == first["labelled"] == first["labelled_this_run"] == 150
    assert first["by_language"] == dict.fromkeys(["en", "es", "fr", "it", "ru"], 30)
    labels = pd.read_parquet(tmp_path / "labels" / "labels" / "fr.parquet")
    assert {
        "reference",
        "text",
        "token_ids",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
        "teacher_id",
        "settings_hash",
        "hash",
        "path",
    } <= set(labels.columns)
    assert (labels["avg_logprob"] <= 0).all() and labels["no_speech_prob"].between(0, 1).all()
    assert (tmp_path / "labels" / labels["path"][0]).resolve().exists()
    second = label_flow(params)
    assert second["labelled_this_run"] == 0 and second["labelled"] == 150

    report = filter_flow(params)
    decisions = pd.read_parquet(tmp_path / "filtered" / "decisions.parquet")
    assert len(decisions) == report["input"] == 150 == report["kept"] + report["dropped"]
    for lang, row in report["by_language"].items():
        assert row["input"] == row["kept"] + sum(row["dropped"].values()), lang
    assert (decisions["status"] != "kept").all()  # a random model's labels are all rejected
    assert (tmp_path / "filtered" / "wer.png").stat().st_size > 1000


def tiny_labeller(tiny_dir: Path, timestamps: bool = False, **kw: Any) -> Any:
    """The transformers labeller on the tiny teacher: 4 new tokens, greedy, no timestamps."""
    from distilflow.label.teacher import TransformersLabeller
    from distilflow.models import load_whisper
    from distilflow.models.device import pick_device

    loaded = load_whisper(str(tiny_dir))
    settings = GenerationSettings("transformers", 4, 1, timestamps)
    return TransformersLabeller(
        loaded.model, loaded.processor, loaded.fingerprint, settings, pick_device("cpu"), **kw
    )


def test_labels_with_timestamps(tiny_dir: Path) -> None:
    """label.timestamps: true keeps the timestamp tokens in the labels (what the student's
    timestamp_share learns), and every label still has a finite mean log-probability."""
    import math

    from distilflow.models import load_whisper

    clips = sorted((DEMO_CORPUS / "audio").glob("fr_*.flac"))[:3]
    labeller = tiny_labeller(tiny_dir, timestamps=True)
    records = labeller.label([Clip(f"t{i}", str(p), "fr", 1.0) for i, p in enumerate(clips)])
    gen = load_whisper(str(tiny_dir)).model.generation_config
    begin = int(gen.no_timestamps_token_id) + 1
    assert len(records) == 3 and all(math.isfinite(r.avg_logprob) for r in records)
    assert all(r.token_ids and r.token_ids[0] >= begin for r in records)  # starts at <|0.00|>


def test_undetermined_language_is_detected_and_recorded(tiny_dir: Path, tmp_path: Path) -> None:
    demo = DEMO_CORPUS / "audio"
    clip = next(iter(sorted(demo.glob("fr_*.flac"))))
    labeller = tiny_labeller(tiny_dir)
    (forced,) = labeller.label([Clip("h1", str(clip), "fr", 1.0)])
    (detected,) = labeller.label([Clip("h2", str(clip), None, 1.0)])
    assert forced.language == "fr" and not forced.language_detected
    assert detected.language_detected and len(detected.language) in (2, 3)


def test_labelling_stores_the_encoder_states_the_student_stage_reads(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """The label stage's encoder pass fills the student's encoder cache: no second pass."""
    import torch

    from distilflow.models import load_whisper
    from distilflow.models.encoder_cache import EncoderCache, module_hash
    from distilflow.training.states import EncoderStates

    demo = DEMO_CORPUS / "audio"
    paths = {f"h{i}": str(p) for i, p in enumerate(sorted(demo.glob("es_*.flac"))[:3])}
    loaded = load_whisper(str(tiny_dir))
    encoder = loaded.model.model.encoder
    cache = EncoderCache(tmp_path / "encoder", module_hash(encoder))
    labeller = tiny_labeller(tiny_dir, encoder_cache=cache)
    labeller.label([Clip(h, p, "es", 1.0) for h, p in paths.items()])
    assert cache.missing(list(paths)) == []

    fe, cpu = loaded.processor.feature_extractor, torch.device("cpu")
    student_side = EncoderStates(encoder, fe, paths, cache, cpu)
    assert student_side.warm(list(paths)) == 0  # nothing left to compute
    fresh = EncoderStates(encoder, fe, paths, None, cpu)(list(paths))
    torch.testing.assert_close(student_side(list(paths)), fresh, atol=2e-3, rtol=1e-2)


KILL_SCRIPT = """
import sys
from pathlib import Path
from distilflow.label.cache import LabelCache
from distilflow.models import load_whisper
from distilflow.label.stage import load_clips
from distilflow.label.teacher import GenerationSettings, TransformersLabeller, label_clips
from distilflow.models.device import pick_device
ingest, model, cache_root = map(Path, sys.argv[1:4])
loaded = load_whisper(str(model))
settings = GenerationSettings("transformers", 8, 1, False)
cpu = pick_device("cpu")
labeller = TransformersLabeller(loaded.model, loaded.processor, loaded.fingerprint, settings, cpu)
cache = LabelCache(cache_root, loaded.fingerprint, settings.hash())
print(label_clips(load_clips(ingest), labeller, cache, 1), flush=True)
"""


def test_killed_labelling_resumes_without_relabelling(tiny_dir: Path, tmp_path: Path) -> None:
    """kill -9 in the middle of labelling: complete batches survive, the rest is labelled next."""
    from distilflow.config import load_params
    from distilflow.ingest.stage import ingest
    from distilflow.sources import iter_items

    cfg = load_params(project_params(tmp_path, tiny_dir)).ingest
    ingest(iter_items(cfg.sources), cfg)
    script = tmp_path / "label.py"
    script.write_text(KILL_SCRIPT, encoding="utf-8")
    args = [sys.executable, str(script), cfg.out_dir, str(tiny_dir), str(tmp_path / "cache")]
    cache_dirs = tmp_path / "cache"
    with subprocess.Popen(args, stdout=subprocess.DEVNULL) as proc:  # waited for on exit
        deadline = time.time() + 120
        while time.time() < deadline and len(list(cache_dirs.rglob("*.parquet"))) < 5:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    from distilflow.models import load_whisper

    settings = GenerationSettings("transformers", 8, 1, False)
    cache = LabelCache(cache_dirs, load_whisper(str(tiny_dir)).fingerprint, settings.hash())
    survived = cache.done()
    assert 5 <= len(survived) < 150  # killed midway, complete batches kept
    rerun = subprocess.run(args, capture_output=True, text=True, check=True)
    assert int(rerun.stdout.strip().splitlines()[-1]) == 150 - len(survived)
    assert len(cache.done()) == 150 and len(cache.read()) == 150
    assert json.dumps(sorted(cache.done()))  # every record readable: no half-written file


@pytest.mark.parametrize("kind", ["dask", "ray"])
def test_label_flow_runs_on_the_configured_cluster(
    prefect_harness: None, tiny_dir: Path, tmp_path: Path, kind: str
) -> None:
    """``runner: {kind: dask | ray, workers: 2}`` in params.yaml: the shards mapped over a local
    Dask cluster of two worker processes, or a local Ray instance of two CPUs."""
    from distilflow.config import load_params
    from distilflow.ingest.stage import ingest
    from distilflow.sources import iter_items
    from flows.label import run_label

    params = project_params(tmp_path, tiny_dir, shard_size=50)
    raw = read_params(params)
    raw["runner"] = {"kind": kind, "workers": 2, "address": ""}
    write_params(params, raw)
    cfg = load_params(params).ingest
    ingest(iter_items(cfg.sources), cfg)
    report = run_label(str(params))
    assert report["labelled_this_run"] == report["labelled"] == 150  # 3 shards of 50
    if kind == "ray":
        import ray

        ray.shutdown()
