"""Real whisper-base on real speech: both labelling backends give the same records."""

from __future__ import annotations

import json

import pytest

from distilflow.label.teacher import Clip, GenerationSettings, TransformersLabeller, batches
from distilflow.models.device import pick_device
from distilflow.text import normalize

from .helpers import DEMO_CORPUS, REPO_ROOT

pytestmark = pytest.mark.slow
CACHE = REPO_ROOT / ".cache"


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    demo = DEMO_CORPUS
    lines = (demo / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    picked = [r for lang in ("en", "es", "fr", "it", "ru") for r in rows if r["language"] == lang][
        ::15
    ]
    out = [
        Clip(r["file_name"], str(demo / r["file_name"]), r["language"], r["duration_s"])
        for r in picked
    ]
    out.append(Clip("detect-" + picked[0]["file_name"], out[0].audio_path, None, out[0].duration_s))
    return out


def test_transformers_and_ctranslate2_backends_agree(clips: list[Clip]) -> None:
    from distilflow.label.teacher_ct2 import Ct2Labeller
    from distilflow.models import load_whisper

    loaded = load_whisper("pypi:whisper-base", cache_dir=CACHE)
    tr = TransformersLabeller(
        loaded.model,
        loaded.processor,
        loaded.fingerprint,
        GenerationSettings("transformers", 96, 1, False),
        pick_device("cpu"),
    )
    ct = Ct2Labeller.from_ref(
        "pypi:whisper-base", GenerationSettings("ctranslate2", 96, 1, False), "cpu", CACHE
    )
    a = {r.hash: r for b in batches(clips, 4) for r in tr.label(b)}
    b = {r.hash: r for b in batches(clips, 4) for r in ct.label(b)}
    assert a.keys() == b.keys() == {c.hash for c in clips}
    for h in a:
        assert a[h].token_ids == b[h].token_ids, (a[h].text, b[h].text)
        assert a[h].language == b[h].language
        assert a[h].avg_logprob == pytest.approx(b[h].avg_logprob, abs=1e-3)
        assert a[h].no_speech_prob == pytest.approx(b[h].no_speech_prob, abs=1e-3)
    detected = a[clips[-1].hash]
    assert detected.language_detected and detected.language == "en"
    assert a[h].teacher_id == loaded.fingerprint == b[h].teacher_id
    # real speech, real model: the English clips are transcribed. Fed zeros past the clip the
    # teacher is less sure of short ones than fed silence: the one-letter clip "u" ("You")
    # scores -1.005 (-0.62 with transformers' padding), "Calling." -0.43 (-0.26)
    en = [a[c.hash] for c in clips if c.language == "en"]
    assert all(r.text and r.avg_logprob > -1.5 for r in en)
    assert max(r.avg_logprob for r in en) > -1.0
    assert normalize(en[0].text, "english")
