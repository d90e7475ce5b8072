"""Distill-L2S (Choi & Park, 2022): align the speech encoder with a multilingual text model.

An auxiliary CTC head reads the student's encoder frames; runs of frames with the same CTC
symbol are merged (mean-pooled) and blank runs dropped, shrinking the frames toward token
rate; a learnable linear map projects them to the text model's width; the frozen text model's
hidden states of the reference text are resampled to the same length by nearest-neighbour
interpolation; the loss is their mean squared error.

The CTC head is low-rank and cheap: a learnable d×d map followed by the student's own (frozen,
tied) token embeddings, plus one blank logit, so it predicts Whisper tokens without a new
vocabulary-sized matrix. The pure functions below are the math; ``TextAlignment`` holds the
learnable parts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def ctc_runs(symbols: list[int], blank: int) -> list[tuple[int, int]]:
    """[start, end) of each run of one non-blank symbol in a frame-wise CTC argmax path. Pure.

    ``[b, 5, 5, b, 5, 7, 7]`` (b blank) gives ``[(1, 3), (4, 5), (5, 7)]``: a repeated symbol
    separated by a blank is two runs, as CTC decoding reads it.
    """
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(symbols) + 1):
        if i == len(symbols) or symbols[i] != symbols[start]:
            if symbols[start] != blank:
                runs.append((start, i))
            start = i
    return runs


def shrink(frames: torch.Tensor, symbols: list[int], blank: int) -> torch.Tensor:
    """Mean-pool ``frames`` (T, d) over each CTC run; (runs, d). All-blank keeps the mean frame."""
    if frames.shape[0] != len(symbols):
        raise ValueError(f"{frames.shape[0]} frames but {len(symbols)} CTC symbols")
    runs = ctc_runs(symbols, blank)
    if not runs:
        return frames.mean(0, keepdim=True)
    return torch.stack([frames[a:b].mean(0) for a, b in runs])


def nearest_resample(x: torch.Tensor, length: int) -> torch.Tensor:
    """(T, d) -> (length, d) by nearest-neighbour interpolation along time. Pure."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if x.shape[0] < 1:
        raise ValueError("cannot resample an empty sequence")
    out = F.interpolate(x.T.unsqueeze(0), size=length, mode="nearest")
    return out.squeeze(0).T


class TextAlignment(nn.Module):
    """The learnable parts of Distill-L2S: CTC head (low-rank, tied) and the projection."""

    def __init__(self, d_model: int, text_width: int, token_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.ctc_in = nn.Linear(d_model, d_model)
        self.blank = nn.Linear(d_model, 1)
        self.project = nn.Linear(d_model, text_width)
        self._embeddings = [token_embeddings]  # the student's; not a submodule, not trained here

    def ctc_log_probs(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, d) -> (T, V + 1) log-probabilities; index V is the blank."""
        h = self.ctc_in(frames)
        table = self._embeddings[0].weight.detach()
        logits = torch.cat([h @ table.T, self.blank(h)], dim=-1)
        return F.log_softmax(logits.float(), dim=-1)

    def forward(
        self, frames: torch.Tensor, targets: list[int], text_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(CTC loss, alignment MSE) of one clip: real frames (T, d), token ids, (L, width)."""
        log_probs = self.ctc_log_probs(frames)
        blank = log_probs.shape[-1] - 1
        ctc = F.ctc_loss(
            log_probs.unsqueeze(1),
            torch.tensor([targets], dtype=torch.long),
            torch.tensor([frames.shape[0]]),
            torch.tensor([len(targets)]),
            blank=blank,
            zero_infinity=True,
        )
        path = log_probs.argmax(-1).tolist()
        shrunk = self.project(shrink(frames, path, blank))
        target = nearest_resample(text_states.detach().to(shrunk.dtype), shrunk.shape[0])
        return ctc, F.mse_loss(shrunk, target)


class FrozenTextModel:
    """A multilingual text encoder (XLM-R, InfoXLM, ...), frozen: states of reference texts."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model, self.tokenizer, self.device = model.to(device).eval(), tokenizer, device
        self.model.requires_grad_(False)
        self.width = int(model.config.hidden_size)

    @classmethod
    def load(cls, ref: str, device: torch.device) -> FrozenTextModel:
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


class L2SLoss:
    """The text-alignment term of a batch: mean over clips of CTC + MSE (see ``TextAlignment``).

    ``texts``: the reference text of each clip hash (what the frozen text model reads); CTC
    targets are the decoder's labels without the prompt, padding and end token.
    """

    def __init__(
        self,
        alignment: TextAlignment,
        text_model: FrozenTextModel,
        texts: dict[str, str],
        eos_id: int,
    ) -> None:
        self.alignment, self.text_model, self.texts, self.eos = alignment, text_model, texts, eos_id
        self._states: dict[str, torch.Tensor] = {}  # the text model is frozen: compute once

    def text_states(self, clip: str) -> torch.Tensor:
        if clip not in self._states:
            self._states[clip] = self.text_model.states(self.texts[clip]).cpu()
        return self._states[clip]

    def __call__(
        self, states: torch.Tensor, batch: dict[str, Any], frames: list[int]
    ) -> torch.Tensor:
        total = states.new_zeros((), dtype=torch.float32)
        for i, clip in enumerate(batch["hash"]):
            labels = batch["labels"][i].tolist()
            targets = [t for t in labels if t >= 0 and t != self.eos] or [self.eos]
            text = self.text_states(clip).to(states.device)
            ctc, mse = self.alignment(states[i, : frames[i]], targets, text)
            total = total + ctc + mse
        return total / max(1, len(batch["hash"]))
