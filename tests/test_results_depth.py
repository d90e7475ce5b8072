"""bench.results_depth on the tiny teacher: a student of another depth trained by the student
stage's own code, scored by the evaluation's, and timed on the teacher's tokens."""

from __future__ import annotations

import json
from pathlib import Path

from bench.results_depth import decoding_cost, depth_student, score
from distilflow.config import load_params
from distilflow.evaluate.sets import audiofolder_set

from .helpers import REPO_ROOT, student_params


def test_a_depth_is_trained_scored_and_timed(
    prepared: Path, tiny_teacher: Path, tmp_path: Path
) -> None:
    params = load_params(student_params(prepared, tiny_teacher, out_dir=str(tmp_path / "s")))
    (tmp_path / "s" / "model").mkdir(parents=True)  # the student stage ran
    own, own_s = depth_student(params, params.student.decoder_layers, tmp_path)
    assert own == tmp_path / "s" / "model" and own_s is None  # the pipeline's: not retrained
    # without it (the pipeline ran --until filter) that depth is trained as any other
    model_dir, train_s = depth_student(params, 3, tmp_path / "work")
    assert train_s is not None and (model_dir / "config.json").is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["decoder_layers"] == 3
    report = json.loads((tmp_path / "work" / "depth" / "layers-3" / "report.json").read_text())
    assert report["student"]["decoder_layers_from_teacher"] == [0, 1, 3]
    demo = REPO_ROOT / "demo" / "asterisk"
    test = audiofolder_set("test", demo, 2)
    scored = score(params, "layers-3", model_dir, [test])
    languages = scored["sets"]["test"]["languages"]
    assert set(languages) == {c.language for c in test.clips}
    assert len(scored["clips"]["test"]) == len(test.clips)
    proj = tmp_path / "proj"
    (proj / "corpus").mkdir(parents=True)
    (proj / "corpus" / "test").symlink_to(demo)
    cost = decoding_cost(params, {"layers-3": model_dir}, proj, 1)
    assert set(cost["decoder_ms_per_token"]) == {"teacher", "layers-3"}
    assert cost["clips"] == len({c.language for c in test.clips}) and cost["tokens"] > 0
