"""The keep/drop rule of the pseudo-label filter, tested directly."""

from __future__ import annotations

import dataclasses

import pytest

from distilflow.filter.rule import (
    EMPTY_HYPOTHESIS,
    EMPTY_REFERENCE,
    KEEP,
    LOW_CONFIDENCE,
    NO_SPEECH,
    REPETITION_LOOP,
    UPPERCASE_HYPOTHESIS,
    WER_ABOVE_THRESHOLD,
    FilterRule,
    decide,
    rule_for,
)
from distilflow.text import compression_ratio, error_rate, is_uppercase, normalize

RULE = FilterRule(
    normalizer="basic",
    strip_accents=True,
    use_cer=False,
    max_error=0.2,
    max_compression_ratio=2.4,
    min_avg_logprob=-1.0,
    max_no_speech_prob=0.6,
    drop_uppercase=True,
)


def test_normalisers() -> None:
    assert normalize("exclaimation-point [!]", "english") == "exclaimation point"
    assert normalize("Mr. Smith paid", "english") == "mister smith paid"
    assert normalize("¿Cómo está? Ça va", "basic", strip_accents=True) == "como esta ca va"
    assert normalize("¿Cómo está?", "basic", strip_accents=False) == "cómo está"
    assert normalize("Привет, мир!", "basic") == "привет мир"
    assert normalize(" A  b ", "none") == "A b"


def test_keep_and_wer_threshold() -> None:
    kept = decide("Buenos dias", "¡Buenos días!", -0.2, 0.01, RULE)
    assert kept.status == KEEP and kept.error == 0.0
    dropped = decide("uno dos tres cuatro", "uno dos", -0.2, 0.01, RULE)
    assert dropped.status == WER_ABOVE_THRESHOLD and dropped.error == pytest.approx(0.5)
    assert (
        decide("uno dos tres cuatro cinco", "uno dos tres cuatro", -0.2, 0.0, RULE).status == KEEP
    )


def test_drop_reasons() -> None:
    assert decide("[!]", "hello", 0.0, 0.0, RULE).status == EMPTY_REFERENCE
    assert decide("hello", " ... ", 0.0, 0.0, RULE).status == EMPTY_HYPOTHESIS
    assert decide("hello world", "HELLO WORLD", 0.0, 0.0, RULE).status == UPPERCASE_HYPOTHESIS
    loop = "thank you " * 40
    assert compression_ratio(loop) > 2.4
    assert decide(loop, loop, 0.0, 0.0, RULE).status == REPETITION_LOOP
    no_upper = dataclasses.replace(RULE, drop_uppercase=False)
    assert decide("hello world", "HELLO WORLD", 0.0, 0.0, no_upper).status == KEEP


def test_unlabelled_clips_are_judged_by_confidence() -> None:
    assert decide(None, "hola", -0.3, 0.1, RULE).status == KEEP
    assert decide(None, "hola", -1.5, 0.1, RULE).status == LOW_CONFIDENCE
    assert decide(None, "hola", -0.3, 0.9, RULE).status == NO_SPEECH


def test_single_capital_letter_is_not_uppercase_failure() -> None:
    assert not is_uppercase("C.")
    assert is_uppercase("ABC")
    assert not is_uppercase("Abc")
    assert not is_uppercase("123")


def test_cer_for_languages_without_spaces() -> None:
    rule = rule_for(
        "ja",
        {"default": "basic"},
        {"default": 0.2},
        None,
        strip_accents=False,
        max_compression_ratio=2.4,
        min_avg_logprob=-1.0,
        max_no_speech_prob=0.6,
        drop_uppercase=True,
    )
    assert rule.use_cer and rule.max_error == 0.2
    assert error_rate("abcd", "abce", use_cer=True) == pytest.approx(0.25)
    assert error_rate("a b", "", use_cer=False) == 1.0
    en = rule_for(
        "en",
        {"default": "basic", "en": "english"},
        {"default": 0.3, "en": 0.1},
        [],
        strip_accents=False,
        max_compression_ratio=2.4,
        min_avg_logprob=-1.0,
        max_no_speech_prob=0.6,
        drop_uppercase=True,
    )
    assert en.normalizer == "english" and en.max_error == 0.1 and not en.use_cer


def test_a_dropped_label_keeps_a_usable_reference_and_its_error() -> None:
    loop = "uno dos " * 30
    d = decide("uno dos", loop, 0.0, 0.0, RULE)
    assert d.status == REPETITION_LOOP and d.reference_usable and d.error is not None
    wrong = decide("uno dos tres cuatro", "uno dos", -0.2, 0.01, RULE)
    assert wrong.status == WER_ABOVE_THRESHOLD and wrong.reference_usable
    assert wrong.error == pytest.approx(0.5)
    assert not decide("[!]", "hello", 0.0, 0.0, RULE).reference_usable
    assert not decide(None, "hola", -0.3, 0.1, RULE).reference_usable
    assert decide("hello", " ... ", 0.0, 0.0, RULE).error is None  # empty label: no error
