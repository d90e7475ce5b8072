"""Speculative decoding (Leviathan et al. 2023) with a distilled student as the assistant.

The student shares the teacher's tokenizer, so transformers' ``generate(assistant_model=...)``
can let it draft tokens that the teacher then verifies in one forward pass. With greedy decoding
the output is exactly the teacher's own greedy output, only faster when the student agrees often.

Both functions return the same form: the tokens generated after the forced prompt
(``<|startoftranscript|><|xx|><|transcribe|><|notimestamps|>``), without ``<|endoftext|>``, that
is what ``tokenizer.decode`` turns into the transcript. Batch size 1, one 30 s window.

Two transformers 5.23 behaviours are undone here:

- For speculative decoding Whisper's ``generate`` drops ``begin_suppress_tokens`` (the blank
  and ``<|endoftext|>`` may not start a transcript), so its first token can differ from plain
  greedy. The suppression is put back as a logits processor pinned to the absolute prompt
  length: transformers' own ``SuppressTokensAtBeginLogitsProcessor`` would not do, since the
  assistant's nested ``generate`` calls ``set_begin_index`` on the shared processor every round
  and the teacher would then suppress those tokens mid-transcript.
- It sets ``force_unique_generate_call`` on the assistant's generation config for good, after
  which the assistant's own ``generate`` returns the prompt and ``<|endoftext|>`` too. Both models
  decode here under a scoped copy of their generation config, restored afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    WhisperForCausalLM,
    WhisperForConditionalGeneration,
)

from distilflow.decoding.generate_args import token_budget
from distilflow.decoding.loop_guard import LoopGuard
from distilflow.models.dynamic import generate_inputs

TASK = "transcribe"


def greedy_generate(
    model: WhisperForConditionalGeneration,
    input_features: torch.Tensor,
    language: str,
    max_new_tokens: int,
    guard: LoopGuard | None = None,
) -> list[int]:
    """Plain greedy transcript tokens of one window (the reference for ``assisted_generate``);
    with ``guard``, a transcript that starts to loop is ended and its repeats cut."""
    features = _check_features(model, input_features)
    with _scoped_generation_config(model) as gen:
        _prompt(gen, language)  # validates the language
        inputs = generate_inputs(model, features)  # a dynamic student: its encoder's outputs
        kwargs = _greedy_kwargs(gen, language, max_new_tokens)
        if guard is not None:
            kwargs["logits_processor"] = LogitsProcessorList(guard.processors(model))
        out = model.generate(**inputs, **kwargs)
    tokens = _text_tokens(out, gen)
    return guard.trim(tokens) if guard is not None else tokens  # trim: a no-op when off


def _greedy_kwargs(gen: Any, language: str, max_new_tokens: int) -> dict[str, Any]:
    """The generate() options both functions share: greedy, forced language, no timestamps."""
    return {
        "generation_config": gen,
        "language": language,
        "task": TASK,
        "return_timestamps": False,
        "do_sample": False,
        "num_beams": 1,
        **token_budget(max_new_tokens),
        "force_unique_generate_call": False,
    }


def decoder_only(student: WhisperForConditionalGeneration) -> WhisperForCausalLM:
    """The student's decoder alone as an assistant (``WhisperForCausalLM``, the same weights
    shared, not copied): it drafts from the teacher's encoder outputs, so a clip runs one
    encoder, not two. Only for a student that keeps the teacher's encoder as is."""
    config = copy.deepcopy(student.config)
    config.is_encoder_decoder = False
    assistant = WhisperForCausalLM(config)
    assistant.model.decoder = student.model.decoder
    assistant.proj_out = student.proj_out
    assistant.generation_config = copy.deepcopy(student.generation_config)
    assistant.eval()  # type: ignore[no-untyped-call]
    return assistant  # on the student's device: every parameter is the student's


def assisted_generate(
    teacher: WhisperForConditionalGeneration,
    assistant: WhisperForConditionalGeneration | WhisperForCausalLM,
    input_features: torch.Tensor,
    language: str,
    max_new_tokens: int,
    draft_tokens: int | None = None,
) -> list[int]:
    """The teacher's greedy transcript tokens, drafted by ``assistant`` (speculative decoding):
    a full student (its own encoder runs too) or :func:`decoder_only` (the teacher's encoder
    outputs serve both). ``draft_tokens``: a fixed number of tokens drafted a round (None:
    transformers' heuristic schedule)."""
    if assistant.config.vocab_size != teacher.config.vocab_size:
        raise ValueError(
            f"assistant vocabulary ({assistant.config.vocab_size}) differs from the teacher's "
            f"({teacher.config.vocab_size}): speculative decoding needs a shared tokenizer"
        )
    features = _check_features(teacher, input_features)
    with ExitStack() as stack:
        gen = stack.enter_context(_scoped_generation_config(teacher))
        assistant_gen = stack.enter_context(_scoped_generation_config(assistant))
        if draft_tokens is not None:
            if draft_tokens < 1:
                raise ValueError(f"draft_tokens {draft_tokens} must be >= 1")
            assistant_gen.num_assistant_tokens = draft_tokens
            assistant_gen.num_assistant_tokens_schedule = "constant"
        begin = SuppressAtPosition(gen.begin_suppress_tokens or [], len(_prompt(gen, language)))
        out = teacher.generate(
            features,
            **_greedy_kwargs(gen, language, max_new_tokens),
            assistant_model=assistant,
            logits_processor=LogitsProcessorList([begin]),
        )
    return _text_tokens(out, gen)


class SuppressAtPosition(LogitsProcessor):
    """Forbid ``tokens`` as the token at absolute ``position`` (the prompt length). Pinned: it has
    no ``set_begin_index``, so nested ``generate`` calls cannot move it."""

    def __init__(self, tokens: Sequence[int], position: int) -> None:
        self.tokens = [int(t) for t in tokens]
        self.position = position

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.tokens and input_ids.shape[-1] == self.position:
            scores = scores.clone()  # type: ignore[assignment]
            scores[..., self.tokens] = -float("inf")
        return scores


@contextmanager
def _scoped_generation_config(model: Any) -> Iterator[GenerationConfig]:
    """Give ``model`` a copy of its generation config for the block; restore the original after."""
    original = model.generation_config
    scoped = copy.deepcopy(original)
    model.generation_config = scoped
    try:
        yield scoped
    finally:
        model.generation_config = original


def _check_features(model: Any, input_features: torch.Tensor) -> torch.Tensor:
    if input_features.ndim != 3 or input_features.shape[0] != 1:
        raise ValueError(
            f"input_features must be (1, n_mels, frames), batch size 1; got "
            f"{tuple(input_features.shape)}"
        )
    return input_features.to(model.device, model.dtype)


def _prompt(gen: GenerationConfig, language: str) -> list[int]:
    """The forced decoder prompt: start, language, task, no timestamps."""
    lang_to_id: dict[str, int] = dict(getattr(gen, "lang_to_id", None) or {})
    token = language if language.startswith("<|") else f"<|{language}|>"
    if token not in lang_to_id:
        raise ValueError(
            f"language {language!r} is not one of the model's {len(lang_to_id)} languages "
            "(give a code such as 'en')"
        )
    task_to_id: dict[str, int] = dict(getattr(gen, "task_to_id", None) or {})
    if TASK not in task_to_id:
        raise ValueError(f"the model's generation config has no {TASK!r} task token")
    return [
        int(gen.decoder_start_token_id),
        int(lang_to_id[token]),
        int(task_to_id[TASK]),
        int(gen.no_timestamps_token_id),  # type: ignore[attr-defined]
    ]


def _text_tokens(out: Any, gen: GenerationConfig) -> list[int]:
    """Row 0 of ``generate``'s output, cut at the first end-of-text token."""
    sequences = out if isinstance(out, torch.Tensor) else out["sequences"]
    eos = gen.eos_token_id
    ends = {int(eos)} if isinstance(eos, int) else {int(e) for e in eos or []}
    tokens: list[int] = []
    for token in sequences[0].tolist():
        if int(token) in ends:
            break
        tokens.append(int(token))
    return tokens
