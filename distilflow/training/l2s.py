"""Distill-L2S (Choi & Park, 2022): align the speech encoder with a multilingual text model.

An auxiliary CTC head reads the student's encoder frames and learns the clip's text (the same
text the text model reads, in Whisper tokens); runs of frames with the same CTC symbol are
merged (mean-pooled) and blank runs dropped, shrinking the frames toward token rate; a
learnable linear map projects them to the text model's width. Two forms of the target
(``text_teacher``):

- token-level (as published): the frozen text model's hidden states of the text, resampled to
  the shrunk length by nearest-neighbour interpolation, matched by MSE (:class:`TextAlignment`);
- sentence-level: a sentence encoder's (centred) embedding of the text against the projected
  mean of the shrunk frames, by cosine or MSE (:class:`SentenceAlignment`).

The CTC head is trained alone for ``warmup_steps`` before its path drives the shrink (an
untrained head's argmax path is noise). It is low-rank and cheap: a learnable d×d map followed
by the student's own (frozen, tied) token embeddings, plus one blank logit, so it predicts
Whisper tokens without a new vocabulary-sized matrix. The pure functions below are the math.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from distilflow.training.packing import Window, window_texts


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


class CTCHead(nn.Module):
    """The auxiliary CTC head and the projection to the text model's width."""

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

    def ctc(self, frames: torch.Tensor, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(CTC loss of ``targets``, the frames' log-probabilities)."""
        log_probs = self.ctc_log_probs(frames)
        loss = F.ctc_loss(
            log_probs.unsqueeze(1),
            torch.tensor([targets], dtype=torch.long),
            torch.tensor([frames.shape[0]]),
            torch.tensor([len(targets)]),
            blank=log_probs.shape[-1] - 1,
            zero_infinity=True,
        )
        return loss, log_probs

    def shrunk(self, frames: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        """The frames shrunk along the head's argmax path and projected: (runs, text width)."""
        blank = log_probs.shape[-1] - 1
        projected: torch.Tensor = self.project(shrink(frames, log_probs.argmax(-1).tolist(), blank))
        return projected


class TextAlignment(CTCHead):
    """Token-level Distill-L2S (as published): shrunk frames against the text model's states."""

    def forward(
        self,
        frames: torch.Tensor,
        targets: list[int],
        text_states: torch.Tensor,
        align: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(CTC loss, alignment MSE) of one clip: real frames (T, d), token ids, (L, width);
        ``align`` False (the head's warm-up): the alignment term is 0."""
        ctc, log_probs = self.ctc(frames, targets)
        if not align:
            return ctc, ctc.new_zeros(())
        shrunk = self.shrunk(frames, log_probs)
        target = nearest_resample(text_states.detach().to(shrunk.dtype), shrunk.shape[0])
        return ctc, F.mse_loss(shrunk, target)


def sentence_distance(
    pooled: torch.Tensor, embedding: torch.Tensor, kind: Literal["cosine", "mse"]
) -> torch.Tensor:
    """1 − cosine, or the mean squared error, of two (width,) vectors. Pure."""
    if kind == "cosine":
        return 1 - F.cosine_similarity(pooled, embedding, dim=0)
    return F.mse_loss(pooled, embedding)


class SentenceAlignment(CTCHead):
    """Sentence-level Distill-L2S: the projected mean of the shrunk frames against a sentence
    encoder's (centred) embedding of the text."""

    def __init__(
        self,
        d_model: int,
        text_width: int,
        token_embeddings: nn.Embedding,
        distance: Literal["cosine", "mse"] = "cosine",
    ) -> None:
        super().__init__(d_model, text_width, token_embeddings)
        self.distance = distance

    def forward(
        self, frames: torch.Tensor, targets: list[int], embedding: torch.Tensor, align: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(CTC loss, sentence distance) of one clip: real frames (T, d), token ids, (width,)."""
        ctc, log_probs = self.ctc(frames, targets)
        if not align:
            return ctc, ctc.new_zeros(())
        pooled = self.shrunk(frames, log_probs).mean(0)
        return ctc, sentence_distance(pooled, embedding.detach().to(pooled.dtype), self.distance)


class L2SLoss:
    """The text-alignment term of a batch: mean over clips of CTC + alignment.

    ``targets``: each clip's CTC targets, the Whisper tokens of the text the text model reads;
    ``text_target``: a clip's text-model output (token states or sentence embedding);
    ``warmup_steps``: steps (set on ``step`` by the trainer's hook) when the CTC head trains
    alone.
    """

    def __init__(
        self,
        alignment: CTCHead,
        targets: dict[str, list[int]],
        text_target: Callable[[str], torch.Tensor],
        warmup_steps: int = 0,
    ) -> None:
        self.alignment, self.targets, self.text_target = alignment, targets, text_target
        self.warmup_steps, self.step = warmup_steps, 0

    def __call__(
        self, states: torch.Tensor, batch: dict[str, Any], frames: list[int]
    ) -> torch.Tensor:
        total = states.new_zeros((), dtype=torch.float32)
        align = self.step >= self.warmup_steps
        for i, clip in enumerate(batch["hash"]):
            text = self.text_target(clip).to(states.device)
            ctc, dist = self.alignment(states[i, : frames[i]], self.targets[clip], text, align)
            total = total + ctc + dist
        return total / max(1, len(batch["hash"]))


def clip_texts(examples: Any, windows: Sequence[Window] = ()) -> dict[str, str]:
    """What the text model reads of each clip (a training-examples frame's rows): its reference,
    else its label; and of each packed window, its clips' texts in order."""
    texts = {r.hash: str(r.reference or r.text) for r in examples.itertuples()}
    return texts | window_texts(windows, texts)


def ctc_targets(tokenizer: Any, texts: dict[str, str], eos: int) -> dict[str, list[int]]:
    """Each clip's text in Whisper's text tokens (as a transcript starts: after a space); an
    empty text is the end token alone."""
    return {
        clip: tokenizer(" " + text.strip(), add_special_tokens=False).input_ids or [eos]
        for clip, text in texts.items()
    }


def make_l2s_loss(
    student: Any,
    tokenizer: Any,
    texts: dict[str, str],
    text_model_ref: str,
    warmup_steps: int,
    distance: Literal["cosine", "mse"],
    eos: int,
    cache_dir: Path | None,
) -> L2SLoss:
    """Distill-L2S for ``student`` on clips ``texts`` (hash -> text): the text model, and the
    learnable head attached to the student as ``distilflow_l2s`` so the optimiser and the
    checkpoints carry it (saved models leave it out). The CTC head learns the same text the text
    model reads."""
    from distilflow.training.text_teacher import (
        SentenceTextModel,
        clip_embeddings,
        load_text_model,
    )

    device = next(student.parameters()).device
    text_model = load_text_model(text_model_ref, device)
    d_model, embeddings = student.config.d_model, student.model.decoder.embed_tokens
    head: CTCHead
    target: Callable[[str], torch.Tensor]
    if isinstance(text_model, SentenceTextModel):
        head = SentenceAlignment(d_model, text_model.width, embeddings, distance)
        target = clip_embeddings(text_model, texts, cache_dir).__getitem__
    else:
        head = TextAlignment(d_model, text_model.width, embeddings)
        states: dict[str, torch.Tensor] = {}  # the text model is frozen: once a clip

        def target(clip: str) -> torch.Tensor:
            if clip not in states:
                states[clip] = text_model.states(texts[clip]).cpu()
            return states[clip]

    student.distilflow_l2s = head.to(device)
    return L2SLoss(head, ctc_targets(tokenizer, texts, eos), target, warmup_steps)
