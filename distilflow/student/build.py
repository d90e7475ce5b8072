"""Student creation (Distil-Whisper): keep the teacher's encoder, copy a few decoder layers.

The student is built from a config with fewer decoder layers and a remapped state dict, never by
slicing the teacher's ``ModuleList``: a sliced list keeps each attention's old ``layer_idx`` and
the KV cache then fails with IndexError.

Where the student came from (teacher layers copied, teacher depth, teacher id) is recorded on its
config as ``distilflow_student`` (so it travels in ``config.json``) and in the side file
``distilflow_student.json`` that ``save_student`` writes next to the weights.
"""

from __future__ import annotations

import copy
import json
import operator
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from transformers.initialization import no_init_weights

from distilflow.models.convert import atomic_dir
from distilflow.models.device import TRAIN_ONLY
from distilflow.models.features import FIELD, padding_of

SIDE_FILE = "distilflow_student.json"
RECORD = "distilflow_student"  # config attribute holding the provenance record
_DECODER_LAYER = re.compile(r"^model\.decoder\.layers\.(\d+)\.(.+)$")


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher decoder layers to copy, maximally spaced, first and last kept. Pure.

    Distil-Whisper's map (``np.linspace(0, n - 1, k, dtype=int)``, last forced to ``n - 1``),
    computed exactly in integers: layer ``i`` of the student is teacher layer
    ``floor(i * (n - 1) / (k - 1))``. 6 -> 2: [0, 5]; 6 -> 3: [0, 2, 5]; 32 -> 2: [0, 31];
    k == n or k == -1: every layer. k == 1 keeps the last layer, the one that feeds the output
    projection.
    """
    if teacher_layers < 1:
        raise ValueError(f"teacher must have at least one decoder layer, got {teacher_layers}")
    if student_layers == -1:
        student_layers = teacher_layers
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(
            f"student decoder layers must be between 1 and the teacher's {teacher_layers} "
            f"(or -1: every one), got {student_layers}"
        )
    if student_layers == 1:
        return [teacher_layers - 1]
    return [i * (teacher_layers - 1) // (student_layers - 1) for i in range(student_layers)]


def check_layer_ids(ids: Sequence[int], teacher_layers: int) -> list[int]:
    """An explicit list of teacher decoder layers, validated: integers, unique, in range; sorted."""
    try:
        out = sorted(operator.index(i) for i in ids)
    except TypeError:
        raise ValueError(f"decoder layer ids must be integers, got {list(ids)}") from None
    if not out:
        raise ValueError("decoder layer ids: empty list, keep at least one layer")
    duplicates = sorted({i for i in out if out.count(i) > 1})
    if duplicates:
        raise ValueError(f"decoder layer ids {list(ids)}: {duplicates} given more than once")
    outside = [i for i in out if not 0 <= i < teacher_layers]
    if outside:
        raise ValueError(
            f"decoder layer ids {list(ids)}: {outside} outside the teacher's layers "
            f"0..{teacher_layers - 1}"
        )
    return out


def make_student(
    teacher: WhisperForConditionalGeneration, decoder_layers: int | Sequence[int]
) -> tuple[WhisperForConditionalGeneration, list[int]]:
    """A student with the teacher's decoder layers ``decoder_layers`` (a count or explicit ids).

    Everything else is the teacher's: encoder, token and position embeddings, decoder layer
    norm, output projection (tied as in the teacher), generation config, dtype and device. The
    teacher is not modified and shares no tensor with the student. Returns the student (in eval
    mode, all parameters trainable) and the teacher layers it holds, in order.
    """
    n = int(teacher.config.decoder_layers)
    if isinstance(decoder_layers, int):
        ids = layer_map(n, decoder_layers)
    else:
        ids = check_layer_ids(decoder_layers, n)
    config = copy.deepcopy(teacher.config)
    config.decoder_layers = len(ids)
    setattr(config, RECORD, {"layer_ids": ids, "teacher_layers": n, "teacher_id": _id(teacher)})
    with no_init_weights():  # every weight is overwritten below; skip the random init
        student = WhisperForConditionalGeneration(config)
    _load_strict(student, remap_decoder_layers(teacher.state_dict(), ids))
    student.generation_config = copy.deepcopy(teacher.generation_config)
    gen = student.generation_config
    heads = student_alignment_heads(getattr(gen, "alignment_heads", None), ids, config)
    gen.alignment_heads = heads  # type: ignore[attr-defined]
    student.to(device=teacher.device, dtype=teacher.dtype)  # type: ignore[call-arg]
    student.eval()  # type: ignore[no-untyped-call]
    return student, ids


def remap_decoder_layers(
    state: dict[str, torch.Tensor], ids: Sequence[int]
) -> dict[str, torch.Tensor]:
    """The teacher's state dict with decoder layer ``ids[j]`` renamed to layer ``j``, others out.

    Tensors are not copied: ``load_state_dict`` copies them into the student's own.
    """
    new_index = {old: new for new, old in enumerate(ids)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _DECODER_LAYER.match(key)
        if match is None:
            out[key] = value
        elif int(match.group(1)) in new_index:
            out[f"model.decoder.layers.{new_index[int(match.group(1))]}.{match.group(2)}"] = value
    return out


def student_alignment_heads(
    heads: Sequence[Sequence[int]] | None, ids: Sequence[int], config: Any
) -> list[list[int]]:
    """The teacher's cross-attention alignment heads that survive, renumbered to student layers.

    When none survive: every head of the student's upper half (OpenAI's default). These heads
    only serve word-level timestamps.
    """
    new_index = {old: new for new, old in enumerate(ids)}
    kept = [[new_index[int(layer)], int(head)] for layer, head in heads or [] if layer in new_index]
    if kept:
        return kept
    k, n_heads = len(ids), int(config.decoder_attention_heads)
    return [[layer, head] for layer in range(k // 2, k) for head in range(n_heads)]


def _load_strict(student: WhisperForConditionalGeneration, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = student.load_state_dict(state, strict=False)
    tied = {"proj_out.weight"} if student.config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(
            f"student state dict mismatch: missing {missing}, unexpected {unexpected}"
        )
    student.tie_weights()


def _id(model: Any) -> str | None:
    name = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", ""))
    return name or None


def save_student(
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    dst: Path,
    info: dict[str, Any],
) -> Path:
    """Save a student (safetensors, generation config, processor) and ``distilflow_student.json``.

    One atomic directory publish, as ``save_whisper`` does; refuses an existing ``dst``. The side
    file holds the config's provenance record (``layer_ids``, ``teacher_layers``, ``teacher_id``,
    null when unknown; ``audio_context``: padded or dynamic, and its ``context_multiple_s``;
    ``feature_padding``: the processor's, the one it was trained with)
    updated with ``info`` (``info`` wins on a shared key).
    """
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; refusing to overwrite it")
    record: dict[str, Any] = {"layer_ids": None, "teacher_layers": None, "teacher_id": None}
    record |= {"audio_context": "padded", "context_multiple_s": None}  # see dynamic.py
    record |= dict(getattr(model.config, RECORD, None) or {})
    # the front end it was trained with travels in its config too (models/features.py)
    record |= {FIELD: padding_of(processor.feature_extractor)} | dict(info)
    text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    with atomic_dir(dst) as tmp:
        # a training-only head (Distill-L2S's, ``distilflow_l2s``) is not part of the model
        weights = {k: v for k, v in model.state_dict().items() if not k.startswith(TRAIN_ONLY)}
        model.save_pretrained(tmp, state_dict=weights)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        config[RECORD] = (config.get(RECORD) or {}) | {FIELD: record[FIELD]}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        processor.save_pretrained(tmp)
        (tmp / SIDE_FILE).write_text(text, encoding="utf-8")
    return dst
