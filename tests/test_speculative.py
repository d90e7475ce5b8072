"""Speculative decoding with a distilled student gives exactly the teacher's greedy tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperForConditionalGeneration

from distilflow.decoding.speculative import assisted_generate, decoder_only, greedy_generate
from distilflow.student.build import make_student
from distilflow.testing import tiny_whisper

MAX_NEW = 12
# (features seed, language): random log-mel windows, one language each
INPUTS = [(0, "en"), (1, "fr"), (2, "es"), (3, "de"), (4, "ru")]


def features(seed: int) -> torch.Tensor:
    return torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def teacher() -> WhisperForConditionalGeneration:
    return tiny_whisper(seed=1, decoder_layers=4)[0]


@pytest.fixture(scope="module")
def reference(teacher: WhisperForConditionalGeneration) -> list[list[int]]:
    return [greedy_generate(teacher, features(s), lang, MAX_NEW) for s, lang in INPUTS]


def perturbed(model: WhisperForConditionalGeneration, scale: float) -> None:
    """Add relative noise to the decoder layers, so the assistant sometimes disagrees."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.model.decoder.layers.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=g))


def agreed_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize(
    ("layers", "noise"),
    [(2, 0.0), (4, 0.1)],  # the 2-layer student; a noisy copy that agrees for a while
    ids=["student-2-layers", "noisy-copy"],
)
def test_assisted_output_is_the_teachers_greedy_output(
    teacher: WhisperForConditionalGeneration,
    reference: list[list[int]],
    layers: int,
    noise: float,
) -> None:
    assistant, _ = make_student(teacher, layers)
    perturbed(assistant, noise)
    own = [greedy_generate(assistant, features(s), lang, MAX_NEW) for s, lang in INPUTS]
    prefixes = [agreed_prefix(o, r) for o, r in zip(own, reference, strict=True)]
    assert min(prefixes) < MAX_NEW  # the assistant's drafts are rejected somewhere
    for (seed, lang), want in zip(INPUTS, reference, strict=True):
        got = assisted_generate(teacher, assistant, features(seed), lang, MAX_NEW)
        assert got == want, (seed, lang)
    assert all(0 < len(r) <= MAX_NEW for r in reference)


@pytest.mark.parametrize("draft", [None, 1, 3, 8])
def test_a_decoder_only_assistant_gives_the_teachers_greedy_output(
    teacher: WhisperForConditionalGeneration, reference: list[list[int]], draft: int | None
) -> None:
    """The student's decoder alone drafts from the teacher's encoder outputs, any draft length."""
    student, _ = make_student(teacher, 2)
    assistant = decoder_only(student)
    assert assistant.model.decoder is student.model.decoder  # shared, not copied
    assert not any("conv1" in name for name, _ in assistant.named_parameters())  # no encoder
    for (seed, lang), want in zip(INPUTS, reference, strict=True):
        got = assisted_generate(teacher, assistant, features(seed), lang, MAX_NEW, draft)
        assert got == want, (seed, lang, draft)


def test_prompt_and_end_token_are_left_out(
    teacher: WhisperForConditionalGeneration, reference: list[list[int]]
) -> None:
    gen = teacher.generation_config
    specials = {gen.decoder_start_token_id, gen.eos_token_id, gen.no_timestamps_token_id}
    specials |= set(gen.lang_to_id.values()) | set(gen.task_to_id.values())
    assert not specials & {t for r in reference for t in r}


def test_begin_suppression_survives_speculative_decoding() -> None:
    """transformers drops begin_suppress_tokens for assisted decoding; the result must not."""
    teacher, _ = tiny_whisper(seed=1, decoder_layers=4)
    first = greedy_generate(teacher, features(0), "en", 1)[0]
    blank = int(teacher.generation_config.begin_suppress_tokens[0])
    with torch.no_grad():  # make the blank the best first token by far (tied projection)
        embeddings = teacher.get_input_embeddings().weight
        embeddings[blank] = 10.0 * embeddings[first]
    unsuppressed = teacher.generate(
        features(0), language="en", task="transcribe", max_new_tokens=4, begin_suppress_tokens=None
    )
    assert int(unsuppressed[0, 0]) == blank  # the test bites
    assistant, _ = make_student(teacher, 2)
    want = greedy_generate(teacher, features(0), "en", 8)
    assert want[0] != blank and blank in want  # suppressed only at the start
    assert assisted_generate(teacher, assistant, features(0), "en", 8) == want


def test_models_are_left_as_they_were(teacher: WhisperForConditionalGeneration) -> None:
    assistant, _ = make_student(teacher, 2)
    before = (teacher.generation_config, assistant.generation_config)
    snapshot = [g.to_dict() for g in before]
    plain = greedy_generate(assistant, features(1), "fr", 6)
    assisted_generate(teacher, assistant, features(1), "fr", 6)
    assert (teacher.generation_config, assistant.generation_config) == before
    assert [g.to_dict() for g in before] == snapshot
    # transformers would have set force_unique_generate_call on the assistant for good, after
    # which its own generate() returns the prompt too
    raw = assistant.generate(features(1), language="fr", task="transcribe", max_new_tokens=6)
    assert raw[0].tolist() == plain


def test_bad_inputs_are_refused(teacher: WhisperForConditionalGeneration) -> None:
    with pytest.raises(ValueError, match="batch size 1"):
        greedy_generate(teacher, torch.zeros(2, 80, 3000), "en", 4)
    with pytest.raises(ValueError, match="not one of the model's"):
        assisted_generate(teacher, teacher, features(0), "xx", 4)
    other, _ = tiny_whisper(seed=2, bpe_vocab_size=300)
    with pytest.raises(ValueError, match="shared tokenizer"):
        assisted_generate(teacher, other, features(0), "en", 4)
