"""Greedy Whisper decoding through CTranslate2 (int8 on CPU): the consumer's fast path.

``ctranslate2.models.Whisper.generate`` takes log-mel features of any even length up to the
30 s window (its encoder adds the first positions): a dynamic-context model is fed the clip's
own length plus its margin, exactly the frames its torch encoder reads
(:func:`distilflow.models.dynamic.fit_features`); a padded model the 30 s window. The features
are transformers' front end (the audio padded to 30 s, then the log-mel), as in evaluation.

The repetition guard cannot run inside CTranslate2's search: it is applied to the finished
tokens (:meth:`LoopGuard.trim`), which gives the guard's transcript; a loop then costs its
tokens up to the budget, where transformers stops at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilflow.decoding.generate_args import ct2_max_length
from distilflow.training.data import prompt_ids


def load_ct2_whisper(ct2_dir: Path, compute_type: str = "default", threads: int = 0) -> Any:
    """``ctranslate2.models.Whisper`` on the CPU (``default``: the stored quantization;
    ``threads`` 0: CTranslate2's default)."""
    import ctranslate2

    return ctranslate2.models.Whisper(
        str(ct2_dir), device="cpu", compute_type=compute_type, intra_threads=threads
    )


def storage_view(features: torch.Tensor) -> Any:
    import ctranslate2

    array = np.ascontiguousarray(features.detach().to(torch.float32).cpu().numpy())
    return ctranslate2.StorageView.from_array(array)


def ct2_greedy(
    ct2_model: Any, features: torch.Tensor | Any, prompts: list[list[int]], max_new_tokens: int
) -> list[list[int]]:
    """Greedy text tokens (no prompt, no end-of-text) from ``ctranslate2.models.Whisper``;
    ``features`` a (B, n_mels, frames) tensor or a ``StorageView`` of one."""
    view = storage_view(features) if isinstance(features, torch.Tensor) else features
    results = ct2_model.generate(
        view,
        prompts,
        beam_size=1,
        max_length=ct2_max_length(len(prompts[0]), max_new_tokens),
    )
    return [[int(t) for t in r.sequences_ids[0]] for r in results]


class Ct2Whisper:
    """A CTranslate2 export decoding greedily with a forced or detected language."""

    def __init__(self, ct2_dir: Path, generation_config: Any, threads: int = 0) -> None:
        self.directory = Path(ct2_dir)
        self.model = load_ct2_whisper(self.directory, threads=threads)
        self.generation = generation_config

    def languages(self, view: Any) -> list[str]:
        """Each clip's most likely language token (``<|fr|>``), by the model's detection."""
        return [max(pairs, key=lambda p: p[1])[0] for pairs in self.model.detect_language(view)]

    def generate(
        self, features: torch.Tensor, language: str | None, max_new_tokens: int
    ) -> list[list[int]]:
        """Text tokens of each clip of ``features`` (B, n_mels, frames)."""
        view = storage_view(features)
        batch = int(features.shape[0])
        langs = [language] * batch if language else self.languages(view)
        prompts = [prompt_ids(self.generation, lang) for lang in langs]
        return ct2_greedy(self.model, view, prompts, max_new_tokens)
