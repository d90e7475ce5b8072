"""The release rule: ship a language's experts only where they beat the student alone on dev."""

from __future__ import annotations

import math
from pathlib import Path

from distilflow.register.release import assemble, chosen_languages, dev_wer, release_wer

NAN = math.nan


def test_experts_ship_only_where_strictly_better() -> None:
    student = {"es": 0.3, "fr": 0.5, "it": 0.33, "ru": 0.9, "en": 0.1}
    experts = {"es": 0.6, "fr": 0.33, "it": 0.33, "ru": NAN, "en": 0.05}
    assert chosen_languages(student, experts) == ["en", "fr"]  # a tie or NaN keeps the student
    assert release_wer(student, experts, ["en", "fr"]) == {
        "en": 0.05,
        "es": 0.3,
        "fr": 0.33,
        "it": 0.33,
        "ru": 0.9,
    }
    assert chosen_languages({"fr": NAN}, {"fr": 0.2}) == ["fr"]  # unscored student: experts win
    assert chosen_languages({}, {"fr": 0.2}) == []


def test_dev_wer_reads_the_evaluation_metrics() -> None:
    metrics = {"sets": {"dev": {"experts": {"languages": {"fr": {"wer": 0.25, "clips": 3}}}}}}
    assert dev_wer(metrics, "experts") == {"fr": 0.25}
    assert dev_wer(metrics, "student") == {} and dev_wer({}, "experts") == {}


def test_assemble_copies_student_and_chosen_experts(tmp_path: Path) -> None:
    student = tmp_path / "student"
    student.mkdir()
    (student / "model.safetensors").write_bytes(b"w")
    for lang in ("fr", "es"):
        f = tmp_path / "experts" / lang / "experts" / f"{lang}.safetensors"
        f.parent.mkdir(parents=True)
        f.write_bytes(lang.encode())
    dst = assemble(student, tmp_path / "experts", ["fr"], tmp_path / "release")
    assert sorted(p.name for p in dst.rglob("*") if p.is_file()) == [
        "fr.safetensors",
        "model.safetensors",
    ]
    assert (dst / "experts" / "fr.safetensors").read_bytes() == b"fr"
    assemble(student, tmp_path / "experts", [], dst)  # replaced: no experts any more
    assert not (dst / "experts").exists()
