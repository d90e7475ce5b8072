"""Test helpers: a tiny, random, offline Whisper with the real special-token layout.

``tiny_whisper`` builds in well under a second (after imports) without any download: a small
byte-level BPE trained on a few sentences, followed by Whisper's special tokens in Whisper's
order and names (``<|endoftext|>``, ``<|startoftranscript|>``, 99 languages, tasks,
``<|notimestamps|>``, 1501 timestamps), so language/task forcing and decoding behave as with
the real checkpoints, only with other ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer

from distilflow.audio import N_AUDIO_CTX
from distilflow.models.convert import (
    NO_TIMESTAMPS,
    timestamp_tokens,
    whisper_config,
    whisper_generation_config,
    whisper_processor,
    whisper_special_tokens,
    whisper_tokenizer,
)
from distilflow.models.ct2 import WhisperDims, hf_to_ct2_variables, write_ct2_model

# The 99 languages of the multilingual Whisper v1/v2 checkpoints (large-v3 adds "yue").
N_LANGUAGES = 99

_CORPUS = (
    "Hello world, this is a tiny Whisper model for tests.",
    "Please leave a message after the tone. Thank you for calling.",
    "Bonjour le monde, ceci est un petit modèle pour les tests.",
    "Veuillez laisser un message après le bip sonore. Merci de votre appel.",
    "Hola mundo, este es un modelo pequeño para las pruebas.",
    "Por favor, deje un mensaje después del tono. Gracias por llamar.",
    "Ciao mondo, questo è un piccolo modello per i test.",
    "Lasciate un messaggio dopo il segnale acustico. Grazie per aver chiamato.",
    "Привет, мир! Это маленькая модель для тестов.",
    "Пожалуйста, оставьте сообщение после сигнала. Спасибо за звонок.",
    "Hallo Welt, one two three four five six seven eight nine ten 0123456789.",
)


def whisper_language_codes(count: int = N_LANGUAGES) -> list[str]:
    """Whisper's language codes in token order (from transformers' tokenizer)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return list(LANGUAGES)[:count]


def tiny_tokenizer_json(bpe_vocab_size: int = 384, languages: int = N_LANGUAGES) -> dict[str, Any]:
    """tokenizer.json content: a trained byte-level BPE plus Whisper's added tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer)
    data: dict[str, Any] = json.loads(bpe.to_str())
    first = bpe.get_vocab_size()
    specials = whisper_special_tokens(whisper_language_codes(languages))
    added = [(t, True) for t in specials] + [(t, False) for t in timestamp_tokens()]
    data["added_tokens"] = [
        {"id": first + i, "content": token, "single_word": False, "lstrip": False}
        | {"rstrip": False, "normalized": not special, "special": special}
        for i, (token, special) in enumerate(added)
    ]
    return data


def tiny_tokenizer(bpe_vocab_size: int = 384) -> WhisperTokenizer:
    """A Whisper tokenizer with a small BPE vocabulary and the real special-token layout."""
    return whisper_tokenizer(tiny_tokenizer_json(bpe_vocab_size))


def tiny_whisper(
    seed: int = 0,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    ffn_dim: int | None = None,
    n_mels: int = 80,
    bpe_vocab_size: int = 384,
    decoder_layers: int | None = None,
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """A random Whisper (eval mode) and its processor, built offline and deterministically.

    ``layers`` sets the encoder depth and, unless ``decoder_layers`` is given, the decoder's.
    The global torch RNG is left untouched.
    """
    tokenizer = tiny_tokenizer(bpe_vocab_size)
    dec_layers = layers if decoder_layers is None else decoder_layers
    generation = whisper_generation_config(
        tokenizer, alignment_heads=[[dec_layers - 1, h] for h in range(heads)]
    )
    ffn = ffn_dim if ffn_dim is not None else 4 * d_model
    dims = WhisperDims(
        n_mels=n_mels,
        d_model=d_model,
        vocab_size=len(tokenizer),
        encoder_layers=layers,
        decoder_layers=dec_layers,
        encoder_heads=heads,
        decoder_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_source_positions=N_AUDIO_CTX,
        max_target_positions=448,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(whisper_config(dims, generation))
    no_timestamps = tokenizer.convert_tokens_to_ids(NO_TIMESTAMPS)
    assert isinstance(no_timestamps, int)
    _quiet_timestamps(model, no_timestamps + 1)
    model.generation_config = generation
    model.eval()  # type: ignore[no-untyped-call]
    return model, whisper_processor(tokenizer, n_mels)


def _quiet_timestamps(model: WhisperForConditionalGeneration, first_timestamp: int) -> None:
    """Zero the (tied) timestamp embeddings: their logits become 0, below the best text logit.

    Three quarters of the tiny vocabulary are timestamps; a random model would otherwise
    emit them, and transformers then splits even short-form output into segments.
    """
    with torch.no_grad():
        embeddings = model.get_input_embeddings()
        assert isinstance(embeddings, torch.nn.Embedding)
        embeddings.weight[first_timestamp:] = 0.0


def write_ct2_dir(
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    directory: Path,
    dtype: str = "float32",
) -> Path:
    """Write a CTranslate2 / faster-whisper directory (model.bin, config, vocabulary, tokenizer).

    ``dtype`` is ``float32`` or ``float16``. The files follow what ctranslate2's converter
    writes, so ``ctranslate2.models.Whisper`` loads them.
    """
    cfg = model.config
    variables, aliases = hf_to_ct2_variables(
        model.state_dict(), cfg.encoder_attention_heads, cfg.decoder_attention_heads
    )
    variables = {k: v.astype(dtype) if v.ndim else v for k, v in variables.items()}
    directory = Path(directory)
    write_ct2_model(directory / "model.bin", variables, aliases)
    tokenizer = processor.tokenizer
    generation = model.generation_config.to_dict()
    ct2_config = {
        "alignment_heads": generation.get("alignment_heads") or [],
        "lang_ids": sorted((generation.get("lang_to_id") or {}).values()),
        "suppress_ids": list(generation.get("suppress_tokens") or []),
        "suppress_ids_begin": list(generation.get("begin_suppress_tokens") or []),
    }
    (directory / "config.json").write_text(json.dumps(ct2_config, indent=2), "utf-8")
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    (directory / "vocabulary.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    tokenizer.backend_tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def save_tiny_whisper(directory: Path, seed: int = 0, **kwargs: Any) -> Path:
    """Save ``tiny_whisper(seed, **kwargs)`` as a transformers directory (safetensors)."""
    model, processor = tiny_whisper(seed, **kwargs)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
