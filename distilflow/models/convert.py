"""Build a transformers Whisper (model, processor, generation config) from a CTranslate2 directory.

A CTranslate2 / faster-whisper directory holds ``model.bin``, ``config.json`` (suppress ids,
alignment heads, language ids) and ``tokenizer.json`` (or only ``vocabulary.json``). The result
is saved as an ordinary transformers directory (safetensors) that ``from_pretrained`` loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from distilflow.audio import N_AUDIO_CTX, TIME_PRECISION
from distilflow.models.ct2 import (
    Ct2FormatError,
    WhisperDims,
    ct2_to_hf_state_dict,
    infer_dims,
    read_ct2_model,
)

EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"
TASK_TOKENS = {"translate": "<|translate|>", "transcribe": "<|transcribe|>"}
MAX_TARGET_LENGTH = 448
_LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw)\|>$")


def whisper_special_tokens(languages: Sequence[str]) -> list[str]:
    """Whisper's special tokens in id order, from ``<|endoftext|>`` to ``<|notimestamps|>``."""
    return [
        EOT,
        SOT,
        *(f"<|{code}|>" for code in languages),
        TASK_TOKENS["translate"],
        TASK_TOKENS["transcribe"],
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        NO_TIMESTAMPS,
    ]


def timestamp_tokens(count: int = N_AUDIO_CTX + 1) -> list[str]:
    """``<|0.00|>`` ... ``<|30.00|>``: Whisper's timestamp tokens, 20 ms apart."""
    return [f"<|{i * TIME_PRECISION:.2f}|>" for i in range(count)]


def whisper_tokenizer(source: Path | Mapping[str, Any]) -> WhisperTokenizer:
    """A Whisper tokenizer from a tokenizer.json path or dict, special tokens registered.

    Every token from ``<|endoftext|>`` to ``<|notimestamps|>`` must be a registered special
    token: the tokenizer takes the id after the last special id as the first timestamp, and
    decoded timestamps shift (by 2.12 s on whisper-base) when the list stops short.
    """
    data = json.loads(Path(source).read_text("utf-8")) if isinstance(source, Path) else source
    added = {int(t["id"]): str(t["content"]) for t in data.get("added_tokens", [])}
    by_token = {v: k for k, v in added.items()}
    for needed in (EOT, SOT, NO_TIMESTAMPS):
        if needed not in by_token:
            raise Ct2FormatError(f"tokenizer has no {needed} token: not a Whisper tokenizer")
    specials = [added[i] for i in range(by_token[EOT], by_token[NO_TIMESTAMPS] + 1) if i in added]
    return WhisperTokenizer(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        extra_special_tokens=specials,
        unk_token=EOT,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
    )


def tokenizer_json_from_vocabulary(vocab: Sequence[str]) -> dict[str, Any]:
    """tokenizer.json content rebuilt from a CT2 ``vocabulary.json`` (token list by id).

    Whisper's byte-level BPE ranks are its ids, so each merge is recovered by running BPE on a
    token with the ranks below its own: it ends in exactly the two parts that were merged.
    """
    if EOT not in vocab:
        raise Ct2FormatError(f"vocabulary has no {EOT} token: not a Whisper vocabulary")
    n_bpe = list(vocab).index(EOT)
    ranks = {token: i for i, token in enumerate(vocab[:n_bpe])}
    merges = [parts for token, rank in ranks.items() if len(parts := _bpe(token, ranks, rank)) == 2]
    special_end = list(vocab).index(NO_TIMESTAMPS) if NO_TIMESTAMPS in vocab else len(vocab) - 1
    added: list[dict[str, Any]] = [
        {"id": i, "content": vocab[i], "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": i > special_end, "special": i <= special_end}
        for i in range(n_bpe, len(vocab))
    ]
    model: dict[str, Any] = {"type": "BPE", "dropout": None, "unk_token": None}
    model |= {"continuing_subword_prefix": ""}
    model |= {"end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False}
    model |= {"vocab": ranks, "merges": [list(m) for m in merges]}
    byte_level: dict[str, Any] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level | {"use_regex": True},
        "post_processor": None,
        "decoder": byte_level | {"use_regex": True},
        "model": model,
    }


def _bpe(token: str, ranks: Mapping[str, int], max_rank: int) -> list[str]:
    parts = list(token)
    while len(parts) > 1:
        pairs = [(ranks.get(a + b, max_rank), i) for i, (a, b) in enumerate(pairwise(parts))]
        rank, i = min(pairs)
        if rank >= max_rank:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def whisper_generation_config(
    tokenizer: WhisperTokenizer,
    *,
    suppress_tokens: Sequence[int] = (),
    begin_suppress_tokens: Sequence[int] | None = None,
    alignment_heads: Sequence[Sequence[int]] = (),
    lang_ids: Sequence[int] | None = None,
) -> GenerationConfig:
    """The GenerationConfig Whisper's ``generate`` needs (language/task forcing, suppression)."""

    def ids(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))  # type: ignore[arg-type]

    eot, sot = ids(EOT), ids(SOT)
    if lang_ids is None:
        lang_ids = _language_ids(tokenizer, sot)
    lang_to_id = {str(tokenizer.convert_ids_to_tokens(int(i))): int(i) for i in lang_ids}
    task_to_id = {
        task: ids(tok) for task, tok in TASK_TOKENS.items() if tok in tokenizer.get_vocab()
    }
    if begin_suppress_tokens is None:
        begin_suppress_tokens = [ids("Ġ"), eot]
    return GenerationConfig(  # type: ignore[no-untyped-call]
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=MAX_TARGET_LENGTH,
        is_multilingual=bool(lang_to_id),
        lang_to_id=lang_to_id,
        task_to_id=task_to_id,
        no_timestamps_token_id=ids(NO_TIMESTAMPS),
        prev_sot_token_id=ids("<|startofprev|>"),
        suppress_tokens=[int(t) for t in suppress_tokens],
        begin_suppress_tokens=[int(t) for t in begin_suppress_tokens],
        alignment_heads=[[int(a), int(b)] for a, b in alignment_heads],
        max_initial_timestamp_index=50,
    )


def _language_ids(tokenizer: WhisperTokenizer, sot: int) -> list[int]:
    """Ids of the ``<|xx|>`` language tokens that follow ``<|startoftranscript|>``."""
    out: list[int] = []
    for token_id in range(sot + 1, len(tokenizer)):
        if not _LANG_TOKEN.match(str(tokenizer.convert_ids_to_tokens(token_id))):
            break
        out.append(token_id)
    return out


def whisper_config(
    dims: WhisperDims, generation: GenerationConfig, *, tie_word_embeddings: bool = True
) -> WhisperConfig:
    """A WhisperConfig with the given sizes and the special ids of ``generation``."""
    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.n_mels,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        decoder_start_token_id=generation.decoder_start_token_id,
        bos_token_id=generation.bos_token_id,
        eos_token_id=generation.eos_token_id,
        pad_token_id=generation.pad_token_id,
        suppress_tokens=list(generation.suppress_tokens or []),
        begin_suppress_tokens=list(generation.begin_suppress_tokens or []),
        tie_word_embeddings=tie_word_embeddings,
    )


def _read_tokenizer(src: Path) -> WhisperTokenizer:
    if (src / "tokenizer.json").is_file():
        return whisper_tokenizer(src / "tokenizer.json")
    if (src / "vocabulary.json").is_file():
        vocab = json.loads((src / "vocabulary.json").read_text("utf-8"))
        return whisper_tokenizer(tokenizer_json_from_vocabulary(vocab))
    raise Ct2FormatError(f"{src}: neither tokenizer.json nor vocabulary.json found")


def load_ct2_dir(src: Path) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """A float32 transformers Whisper and its processor from a CTranslate2 directory."""
    src = Path(src)
    if not (src / "model.bin").is_file():
        raise Ct2FormatError(f"{src}: no model.bin, not a CTranslate2 model directory")
    ct2 = read_ct2_model(src / "model.bin")
    dims = infer_dims(ct2)
    state = ct2_to_hf_state_dict(ct2)
    cfg_path = src / "config.json"
    ct2_cfg: dict[str, Any] = json.loads(cfg_path.read_text("utf-8")) if cfg_path.is_file() else {}
    tokenizer = _read_tokenizer(src)
    if len(tokenizer) != dims.vocab_size:
        raise Ct2FormatError(
            f"{src}: tokenizer has {len(tokenizer)} tokens, model {dims.vocab_size}"
        )
    generation = whisper_generation_config(
        tokenizer,
        suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"),
        alignment_heads=ct2_cfg.get("alignment_heads") or _default_alignment_heads(dims),
        lang_ids=ct2_cfg.get("lang_ids"),
    )
    tied = torch.equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"])
    model = WhisperForConditionalGeneration(
        whisper_config(dims, generation, tie_word_embeddings=tied)
    )
    model.load_state_dict(state, strict=True)
    model.generation_config = generation
    model.eval()  # type: ignore[no-untyped-call]
    return model, whisper_processor(tokenizer, dims.n_mels)


def whisper_processor(tokenizer: WhisperTokenizer, n_mels: int = 80) -> WhisperProcessor:
    """A processor: the standard 16 kHz, 30 s log-mel front end and ``tokenizer``."""
    extractor = WhisperFeatureExtractor(feature_size=n_mels)  # type: ignore[no-untyped-call]
    return WhisperProcessor(  # type: ignore[no-untyped-call]
        feature_extractor=extractor, tokenizer=tokenizer
    )


def _default_alignment_heads(dims: WhisperDims) -> list[list[int]]:
    """OpenAI's default when none are known: every head of the upper half of the decoder."""
    layers = range(dims.decoder_layers // 2, dims.decoder_layers)
    return [[layer, head] for layer in layers for head in range(dims.decoder_heads)]


@contextmanager
def atomic_dir(dst: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``dst``; on success rename it to ``dst`` in one step.

    A killed writer leaves only a ``.NAME.tmp-*`` directory, never a partial ``dst``. When
    ``dst`` appears meanwhile (a concurrent writer), the existing one is kept.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))
    try:
        yield tmp
        _fsync_tree(tmp)
        try:
            os.rename(tmp, dst)
        except OSError:
            if not dst.is_dir() or not any(dst.iterdir()):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def save_whisper(
    model: WhisperForConditionalGeneration, processor: WhisperProcessor, dst: Path
) -> Path:
    """Save model (safetensors), generation config and processor to ``dst``, atomically."""
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; refusing to overwrite it")
    with atomic_dir(dst) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return dst


def convert_ct2_dir(src: Path, dst: Path) -> Path:
    """Convert a CTranslate2 Whisper directory into a transformers directory at ``dst``."""
    model, processor = load_ct2_dir(Path(src))
    return save_whisper(model, processor, Path(dst))
