"""The decode-time repetition guard: the rule, the cut, and the processor inside ``generate``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from distilflow.config import ConfigError, load_params
from distilflow.decoding.loop_guard import (
    NO_GUARD,
    LoopGuard,
    guard_of,
    loop_start,
    transcript_tail,
)
from distilflow.register.consumer import RegisteredWhisper
from distilflow.testing import tiny_whisper


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([], None),
        ([5, 6, 7], None),
        ([1, 2, 3] * 4, 3),  # a 3-token unit 4 times (12 tokens): keep one copy
        ([9, 8] + [1, 2, 3] * 4, 5),  # words before the loop are kept
        ([1, 2, 3] * 3, None),  # 9 tokens: under min_tokens
        ([4] * 12, 1),  # one token 12 times
        ([4] * 11, None),
        ([7, 7, 7, 1, 2, 1, 2], None),  # "no, no, no" and a phrase said twice: speech
        ([1, 2, 3, 4, 5, 6] * 2, None),  # 2 copies: under min_repeats
        ([1, 2, 3, 4, 5, 6] * 3, 6),
        ([1, 2] * 5 + [1], None),  # 11 tokens
        ([1, 2] * 6 + [1], 3),  # the unit read from the end: (2, 1) six times after a 1
        ([3] + [1, 2] * 6, 3),
    ],
)
def test_loop_start_finds_a_final_loop_of_whole_units(
    tokens: list[int], expected: int | None
) -> None:
    assert loop_start(tokens, min_repeats=3, min_tokens=12) == expected


def test_the_smallest_unit_wins_and_the_rule_can_be_turned_off() -> None:
    assert loop_start([4] * 24, 3, 12) == 1  # not the 2-token or 12-token readings
    assert loop_start([4] * 24, 0, 12) is None
    assert loop_start(list(range(40)) * 3, 3, 12, max_unit=32) is None  # unit longer than max


def test_trim_keeps_one_copy_and_leaves_speech_alone() -> None:
    guard = LoopGuard()
    assert guard.trim([9, 8] + [1, 2, 3] * 5) == [9, 8, 1, 2, 3]
    assert guard.trim([7, 7, 7, 1, 2]) == [7, 7, 7, 1, 2]
    assert NO_GUARD.trim([1, 2, 3] * 5) == [1, 2, 3] * 5


def test_transcript_tail_is_what_follows_the_prompt() -> None:
    assert transcript_tail([900, 901, 902, 5, 6], first_special=900) == [5, 6]
    assert transcript_tail([5, 6], first_special=900) == [5, 6]


class Cycle(LogitsProcessor):
    """Makes a model loop: forces ``unit`` over and over after ``words``."""

    def __init__(self, prompt: int, words: list[int], unit: list[int]) -> None:
        self.prompt, self.words, self.unit = prompt, words, unit

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        i = input_ids.shape[-1] - self.prompt
        token = self.words[i] if i < len(self.words) else self.unit[(i - len(self.words)) % 3]
        out = torch.full_like(scores, -float("inf"))
        out[:, token] = 0.0
        return out  # type: ignore[return-value]


def test_the_processor_ends_a_looping_generate_and_text_rows_cut_the_repeats() -> None:
    model, _ = tiny_whisper()
    guard = LoopGuard()
    words, unit = [10, 11], [20, 21, 22]
    features = torch.zeros(1, 80, 3000)
    kwargs = {"language": "en", "task": "transcribe", "max_new_tokens": 60}
    looping = model.generate(
        features, logits_processor=LogitsProcessorList([Cycle(4, words, unit)]), **kwargs
    )
    # the cut alone keeps one copy of the unit as read from the end: (21, 22, 20) after 10 11 20
    assert guard.text_rows(looping, model) == [[10, 11, 20, 21, 22, 20]]
    assert len(NO_GUARD.text_rows(looping, model)[0]) == 60  # the whole budget was spent
    processors = [Cycle(4, words, unit), *guard.processors(model)]
    guarded = model.generate(features, logits_processor=LogitsProcessorList(processors), **kwargs)
    text = [t for t in guarded[0].tolist() if t < model.generation_config.eos_token_id]
    assert text == words + unit * 4  # ended as soon as the tail was 4 copies (12 tokens)
    assert guard.text_rows(guarded, model) == [words + unit]
    assert processors[1].stopped == 1
    assert NO_GUARD.processors(model) == []


def test_the_consumer_decodes_with_the_guard_by_default() -> None:
    model, processor = tiny_whisper()
    consumer = RegisteredWhisper(model, processor, directory=None)  # type: ignore[arg-type]
    assert consumer.guard == LoopGuard()
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    guarded = consumer.transcribe(audio, "en", max_new_tokens=60)
    consumer.guard = NO_GUARD
    unguarded = consumer.transcribe(audio, "en", max_new_tokens=60)
    assert unguarded.startswith(guarded)  # the guard only ever ends a transcript early...
    assert len(guarded) < len(unguarded)  # ... and this random model loops, so it did


def test_params_decode_section_is_optional_and_checked(tmp_path: object) -> None:
    from pathlib import Path

    from .helpers import REPO_ROOT, read_params, write_params

    params = load_params(REPO_ROOT / "params.yaml")
    assert guard_of(params.decode) == LoopGuard(3, 12)
    raw = read_params()
    raw.pop("decode", None)
    path = write_params(Path(str(tmp_path)) / "params.yaml", raw)
    assert guard_of(load_params(path).decode) == LoopGuard(3, 12)
    raw["decode"] = {"loop_repeats": 1}
    write_params(path, raw)
    with pytest.raises(ConfigError, match="decode: loop_repeats"):
        load_params(path)
