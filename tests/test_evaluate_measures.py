"""The evaluation stage's pure measures: repeats, insertions, WER flavours, speed, eval sets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distilflow.evaluate.hallucination import (
    insertion_counts,
    insertion_rate_corpus,
    repeated_ngrams,
    repeated_ngrams_text,
    units,
)
from distilflow.evaluate.metrics import (
    PairResult,
    build_metrics,
    finite,
    language_metrics,
    rtf,
    tokens_per_second,
)
from distilflow.evaluate.models import ClipResult
from distilflow.evaluate.sets import (
    AudioClip,
    EvalSetError,
    audiofolder_set,
    cap_per_language,
    read_clip_audio,
)
from distilflow.text import error_rate_corpus, error_rate_orthographic

from .helpers import audio_bytes, read_params, tone, write_audiofolder, write_params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b c d e a b c d e", 1),  # six 5-grams, five distinct
        ("a b c d e f g h", 0),
        ("a b c d", 0),  # no 5-gram at all
        ("x x x x x x x", 2),  # three 5-grams, all the same
        ("a b c d e a b c d e a b c d e", 6),  # eleven 5-grams, five distinct
        ("", 0),
    ],
)
def test_repeated_5grams(text: str, expected: int) -> None:
    assert repeated_ngrams(text.split()) == expected


def test_repeated_ngrams_other_n_and_invalid() -> None:
    assert repeated_ngrams(["a", "b", "a", "b", "a", "b"], n=2) == 3  # ab ×3, ba ×2
    with pytest.raises(ValueError, match="n must be"):
        repeated_ngrams(["a"], n=0)


def test_repeats_are_counted_after_normalisation() -> None:
    loop = "Thank you. Thank you, thank you! Thank you; thank you."
    assert repeated_ngrams(loop.split()) == 0  # punctuation hides the loop in raw words
    assert repeated_ngrams_text(loop, "en", "english") == 4  # 10 words, 6 5-grams, 2 distinct
    assert units("東京 都", "ja") == ["東", "京", "都"]


def test_insertion_rate_is_corpus_level() -> None:
    # 5 reference words; "x" and "f f" inserted -> 3 / 5, not the mean of 1/3 and 2/2
    assert insertion_counts("en", ["a b c", "d e"], ["a x b c", "d e f f"]) == (3, 5)
    rate = insertion_rate_corpus("fr", ["a b c", "d e"], ["a x b c", "d e f f"], "basic")
    assert rate == pytest.approx(0.6)


def test_insertion_rate_normalises_and_skips_empty_references() -> None:
    refs, hyps = ["Hello, World!", "  ", "¿Qué?"], ["hello world again", "extra words", "que"]
    # 3 reference words (the empty one is left out), one insertion ("again")
    assert insertion_rate_corpus("es", refs, hyps, "basic") == pytest.approx(1 / 3)
    assert math.isnan(insertion_rate_corpus("en", [""], ["x"], "english"))
    assert insertion_counts("ja", ["東京"], ["東京都"]) == (1, 2)


def test_orthographic_wer_counts_case_and_punctuation() -> None:
    refs, hyps = ["Hello,  world."], ["hello world"]
    assert error_rate_corpus("en", refs, hyps) == 0.0
    assert error_rate_orthographic("en", refs, hyps) == 1.0  # both words differ as written
    assert error_rate_orthographic("en", ["a  b\n c"], ["a b c"]) == 0.0  # whitespace collapsed
    assert error_rate_orthographic("ja", ["東京。"], ["東京"]) == pytest.approx(1 / 3)  # CER
    assert math.isnan(error_rate_orthographic("en", [" "], ["x"]))


def test_rtf_and_tokens_per_second() -> None:
    assert rtf(2.0, 4.0) == 0.5
    assert math.isnan(rtf(1.0, 0.0))
    assert tokens_per_second(10, 2.0) == 5.0
    assert math.isnan(tokens_per_second(3, 0.0))


def _clip(i: int, lang: str, ref: str, hyp: str, audio: float, dec: float, toks: int) -> ClipResult:
    return ClipResult(f"c{i}", lang, ref, hyp, audio, dec, toks)


def test_language_metrics_pool_time_over_clips() -> None:
    clips = [
        _clip(0, "en", "hello there", "hello there", 1.0, 1.0, 4),
        _clip(1, "en", "go", "go go go go go go", 3.0, 0.5, 6),
    ]
    m = language_metrics("en", clips)
    assert m["rtf"] == pytest.approx(1.5 / 4.0)  # total compute / total audio
    assert m["tokens_per_s"] == pytest.approx(10 / 1.5)
    assert m["repeated_5grams"] == 1.0  # "go" ×6: two 5-grams, the same
    assert m["insertion_rate"] == pytest.approx(5 / 3)
    assert m["wer"] == pytest.approx(5 / 3) and m["clips"] == 2.0


def test_build_metrics_shape_and_json_safety() -> None:
    clips = (
        _clip(0, "en", "a b", "a b", 2.0, 1.0, 3),
        _clip(1, "fr", "", "x", 1.0, 1.0, 1),  # no reference: WER is NaN for fr
    )
    results = [
        PairResult("teacher", "dev", "ref", "id1", 100, clips),
        PairResult("student", "dev", "ref", "id2", 60, clips[:1]),
    ]
    metrics = build_metrics(results, {"teacher": 12.5})
    langs = metrics["sets"]["dev"]["teacher"]["languages"]
    assert set(langs) == {"en", "fr"} and math.isnan(langs["fr"]["wer"])
    assert set(langs["en"]) >= {
        "wer",
        "wer_orthographic",
        "insertion_rate",
        "repeated_5grams",
        "rtf",
        "tokens_per_s",
    }
    assert metrics["sets"]["dev"]["teacher"]["mean"]["wer"] == 0.0  # NaN languages ignored
    assert metrics["models"]["teacher"]["rtf"] == pytest.approx(2 / 3)
    assert metrics["models"]["student"]["parameters"] == 60
    assert math.isnan(metrics["models"]["student"]["peak_memory_mb"])
    text = json.dumps(finite(metrics), allow_nan=False)  # NaN became null
    assert '"peak_memory_mb": null' in text


def _a(clip_id: str, lang: str) -> AudioClip:
    return AudioClip(clip_id, f"/x/{clip_id}", lang, "ref", clip_id)


def test_cap_per_language_takes_first_ids() -> None:
    clips = [_a("b", "en"), _a("a", "en"), _a("c", "en"), _a("z", "fr")]
    assert [c.id for c in cap_per_language(clips, 2)] == ["a", "b", "z"]
    assert len(cap_per_language(clips, None)) == 4


def test_audiofolder_set_reads_and_checks_items(tmp_path: Path) -> None:
    wav = audio_bytes(tone(0.5))
    root = write_audiofolder(
        tmp_path / "ok",
        [
            {"file_name": "a.wav", "bytes": wav, "text": "hi", "language": "en"},
            {"file_name": "b.wav", "bytes": wav, "text": "salut", "language": "French"},
        ],
    )
    s = audiofolder_set("ood", root)
    assert s.counts() == {"en": 1, "fr": 1} and len(s.input_hash()) == 16
    assert read_clip_audio("ood", s.clips[0]).size == 8000


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"file_name": "gone.wav", "text": "t", "language": "en"}, r"cannot read 'gone.wav'"),
        ({"file_name": "a.wav", "text": "", "language": "en"}, r"metadata.jsonl:1: .*'text'"),
        ({"file_name": "a.wav", "text": "t", "language": "xx-klingon"}, r"unknown language"),
        ({"file_name": "../a.wav", "text": "t", "language": "en"}, r"outside"),
    ],
)
def test_audiofolder_set_errors_name_the_item(
    tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    root = write_audiofolder(tmp_path / "bad", [entry])
    with pytest.raises(EvalSetError, match=message):
        audiofolder_set("ood", root)


def test_missing_metadata_and_undecodable_audio(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"metadata\.jsonl not found"):
        audiofolder_set("ood", tmp_path)
    (tmp_path / "metadata.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"ood: .*metadata.jsonl:1: not valid JSON"):
        audiofolder_set("ood", tmp_path)
    root = write_audiofolder(
        tmp_path / "junk",
        [{"file_name": "j.wav", "bytes": b"not audio", "text": "t", "language": "en"}],
    )
    clip = audiofolder_set("ood", root).clips[0]
    with pytest.raises(EvalSetError, match=r"ood: clip j.wav .*cannot decode"):
        read_clip_audio("ood", clip)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": ["teacher", "teacher"]}, r"evaluate\.models: .*listed twice"),
        ({"extra_sets": {"dev": "/x"}}, r"evaluate\.extra_sets: 'dev'"),
        ({"max_clips_per_language": 0}, r"evaluate\.max_clips_per_language"),
        ({"languages": []}, r"evaluate\.languages: at least one"),
        ({"languages": ["fr", "fr"]}, r"evaluate\.languages: .*none twice"),
        ({"languages": ["french-ish"]}, r"evaluate\.languages: \['french-ish'\] are not"),
    ],
)
def test_evaluate_config_is_checked(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    from distilflow.config import ConfigError, load_params

    raw = read_params()
    raw["evaluate"].update(change)
    path = write_params(tmp_path / "params.yaml", raw)
    with pytest.raises(ConfigError, match=message):
        load_params(path)


def random_results(seed: int) -> list[PairResult]:
    """(model, set) results over three languages, clips in the order a run transcribes them."""
    import random

    rng = random.Random(seed)
    words = ["one", "two", "deux", "trois", "uno", "the", "a"]
    out = []
    for model, params in (("teacher", 100), ("student", 60)):
        for set_name in ("dev", "ood"):
            clips = tuple(
                ClipResult(
                    f"{lang}{i}",
                    lang,
                    " ".join(rng.choices(words, k=3)),
                    " ".join(rng.choices(words, k=rng.randint(0, 6))),
                    rng.uniform(0.5, 3.0),
                    rng.uniform(0.01, 0.5),
                    rng.randint(0, 9),
                )
                for lang in ("en", "es", "fr")
                for i in range(rng.randint(1, 3))
            )
            out.append(PairResult(model, set_name, f"ref-{model}", f"id-{model}", params, clips))
    return out


def test_results_round_trip_through_json(tmp_path: Path) -> None:
    from distilflow.evaluate.results import (
        StaleResultsError,
        read_results,
        results_path,
        results_record,
        split_by_language,
        write_results,
    )
    from distilflow.lineage import Lineage

    fr = split_by_language(random_results(0))["fr"]
    record = results_record("fr", "languages", fr, {"dev": 3}, Lineage("c", "p1", "i", None))
    path = results_path(tmp_path, "languages", "fr")
    assert path == tmp_path / "languages" / "fr" / "results.json"
    write_results(path, record)
    assert read_results(path, "p1") == fr
    with pytest.raises(StaleResultsError, match="written under params p1"):
        read_results(path, "p2")
    with pytest.raises(ValueError, match=r"teacher on dev: clips of \['en', 'es'\] in fr"):
        results_record("fr", "languages", random_results(0), {}, Lineage("c", "p", "i", None))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_languages_merge_into_the_same_metrics(tmp_path: Path, seed: int) -> None:
    """Split by language, written and read back, merged: the metrics of the one-process run."""
    from distilflow.evaluate.results import (
        merge_results,
        read_results,
        results_path,
        results_record,
        split_by_language,
        write_results,
    )
    from distilflow.lineage import Lineage

    whole = random_results(seed)
    per_language = []
    for lang, results in split_by_language(whole).items():
        path = results_path(tmp_path, "languages", lang)
        write_results(
            path, results_record(lang, "languages", results, {}, Lineage("c", "p", "i", None))
        )
        per_language.append(read_results(path, "p"))
    merged = merge_results(reversed(per_language), ["teacher", "student"], ["dev", "ood"])
    assert merged == whole
    memory = {"teacher": 10.0, "student": 5.0}
    assert build_metrics(merged, memory) == build_metrics(whole, memory)


def test_merge_refuses_languages_of_other_weights() -> None:
    from dataclasses import replace

    from distilflow.evaluate.results import StaleResultsError, merge_results, split_by_language

    parts = split_by_language(random_results(0))
    parts["fr"] = [replace(r, model_id="older") for r in parts["fr"]]
    with pytest.raises(StaleResultsError, match="teacher on dev: languages scored different"):
        merge_results(parts.values(), ["teacher", "student"], ["dev", "ood"])
    with pytest.raises(StaleResultsError, match="pairs this evaluation does not have"):
        merge_results(parts.values(), ["teacher"], ["dev", "ood"])
