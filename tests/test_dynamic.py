"""Dynamic audio context on tiny random Whispers: the math, the encoder, saving, decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from distilflow.models.dynamic import (
    DynamicWhisperEncoder,
    apply_audio_context,
    audio_context_of,
    context_frames,
    context_margin_of,
    fit_features,
    frames_per_multiple,
    generate_inputs,
    is_dynamic,
    length_batches,
    masked_mse,
    real_positions,
    set_audio_context,
)
from distilflow.testing import tiny_whisper
from distilflow.training.dynamic import decoder_state_pairs, set_trainable_encoder


def features(batch: int = 1, frames: int = 3000, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("duration", "multiple", "frames"),
    [
        (2.7, 1.0, 300),
        (3.0, 1.0, 300),  # an exact multiple is not rounded further
        (3.01, 1.0, 400),
        (0.0, 1.0, 100),  # at least one step
        (0.3, 0.5, 50),
        (2.71, 0.02, 272),
        (29.5, 1.0, 3000),
        (45.0, 1.0, 3000),  # never past the 30 s window
        (29.5, 7.0, 3000),  # 35 s rounded, capped
    ],
)
def test_context_frames(duration: float, multiple: float, frames: int) -> None:
    assert context_frames(duration, multiple) == frames
    assert frames % 2 == 0


@pytest.mark.parametrize(
    ("duration", "margin", "multiple", "frames"),
    [(2.7, 1.0, 1.0, 400), (2.7, 0.64, 0.02, 334), (29.5, 1.0, 1.0, 3000), (0.0, 0.5, 1.0, 100)],
)
def test_context_frames_with_a_margin(
    duration: float, margin: float, multiple: float, frames: int
) -> None:
    assert context_frames(duration, multiple, margin_s=margin) == frames
    with pytest.raises(ValueError, match="margin"):
        context_frames(duration, multiple, margin_s=-0.1)


def test_margin_is_recorded_and_read_when_fitting_features() -> None:
    model = set_audio_context(tiny_whisper(seed=0)[0], "dynamic", 0.02, margin_s=0.5)
    assert context_margin_of(model) == 0.5
    feats = features(frames=3000)
    assert fit_features(model, feats, [16_000]).shape[-1] == 150  # 1 s + 0.5 s
    assert context_margin_of(set_audio_context(model, "padded")) == 0.0


def test_the_front_end_on_the_context_alone_gives_the_windows_frames() -> None:
    """Padding the audio just past a dynamic model's context, not to 30 s, changes no frame it
    reads (the consumer's fast front end)."""
    from transformers import WhisperFeatureExtractor

    from distilflow.models.dynamic import padded_samples

    fe = WhisperFeatureExtractor()
    model = set_audio_context(tiny_whisper(seed=0)[0], "dynamic", 0.5, margin_s=1.0)
    rng = np.random.default_rng(0)
    for seconds in (0.3, 2.71, 9.99, 29.5):
        audio = (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32)
        full = fe([audio], sampling_rate=16_000, return_tensors="pt").input_features
        want = fit_features(model, full, [audio.size])
        samples = padded_samples(model, [audio.size])
        assert samples <= 480_000
        short = fe(
            [audio], sampling_rate=16_000, return_tensors="pt", padding="max_length",
            max_length=samples,
        ).input_features  # fmt: skip
        assert torch.equal(fit_features(model, short, [audio.size]), want), seconds
    padded = set_audio_context(tiny_whisper(seed=0)[0], "padded")
    assert padded_samples(padded, [16_000]) == 480_000


def test_decoder_state_pairs() -> None:
    assert decoder_state_pairs([0, 5], 6) == [(1, 1), (2, 6)]
    assert decoder_state_pairs(range(6), 6) == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]
    assert decoder_state_pairs([3], 4) == [(1, 4)]
    for bad in ([], [5, 0], [0, 6], [1, 1]):
        with pytest.raises(ValueError, match="layer_ids"):
            decoder_state_pairs(bad, 6)


@pytest.mark.parametrize(("top", "layers"), [(-1, {0, 1}), (1, {1}), (0, set())])
def test_trainable_encoder_parts(top: int, layers: set[int]) -> None:
    encoder = tiny_whisper(seed=0)[0].model.encoder
    set_trainable_encoder(encoder, top)
    trained = {n for n, p in encoder.named_parameters() if p.requires_grad}
    in_layers = {int(n.split(".")[1]) for n in trained if n.startswith("layers.")}
    other = {n for n in trained if "layer_norm" not in n and not n.startswith("layers.")}
    if top < 0:
        assert trained == {n for n, _ in encoder.named_parameters()}
    else:
        assert {int(n.split(".")[1]) for n in trained if "layer_norm" not in n} == layers
        assert not other and "layer_norm.weight" in trained
    assert layers <= in_layers


@pytest.mark.parametrize("multiple", [0.0, -1.0, 0.01, 0.03, 0.015])
def test_rounding_step_must_be_a_multiple_of_20_ms(multiple: float) -> None:
    with pytest.raises(ValueError, match=r"0\.02"):
        frames_per_multiple(multiple)


def test_real_positions_and_length_batches() -> None:
    assert real_positions(16_000) == 50 and real_positions(16_001) == 51
    assert real_positions(0) == 1 and real_positions(16_000 * 60) == 1500
    assert length_batches([5, 1, 3, 1, 9], 2) == [[1, 3], [2, 0], [4]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError):
        length_batches([1], 0)


def test_masked_mse_counts_real_positions_only() -> None:
    student = torch.zeros(2, 4, 3)
    teacher = torch.zeros(2, 6, 3)
    teacher[0, :2] = 1.0  # clip 0: 2 real positions, both off by 1
    teacher[0, 2:] = 100.0  # padding: ignored
    teacher[1, :] = 2.0  # clip 1: 4 real positions (of 5, cut to the student's 4), off by 2
    mse = masked_mse(student, teacher, [2, 5])
    expected = (2 * 3 * 1.0 + 4 * 3 * 4.0) / (6 * 3)
    assert torch.isclose(mse, torch.tensor(expected))
    grad = torch.zeros(1, 2, 3, requires_grad=True)
    masked_mse(grad, torch.ones(1, 2, 3), [1]).backward()
    assert grad.grad is not None and grad.grad[0, 1].abs().sum() == 0  # no gradient on padding
    with pytest.raises(ValueError):
        masked_mse(torch.zeros(1, 5, 3), torch.zeros(1, 4, 3), [1])


def test_full_window_equals_the_stock_encoder_exactly() -> None:
    model, _ = tiny_whisper(seed=1)
    x = features(2)
    with torch.no_grad():
        stock = model.model.encoder(x).last_hidden_state
        set_audio_context(model, "dynamic", 1.0)
        assert isinstance(model.model.encoder, DynamicWhisperEncoder)
        assert torch.equal(model.model.encoder(x).last_hidden_state, stock)
        short = model.model.encoder(x[..., :300]).last_hidden_state
    assert short.shape == (2, 150, 64)
    with pytest.raises(ValueError, match="multiple of 2"):
        model.model.encoder(x[..., :301])
    with pytest.raises(ValueError):
        model.model.encoder(features(1, 3002))


def test_short_input_sees_only_its_positions() -> None:
    """The first positions of a short input do not depend on frames beyond it (no leakage)."""
    model, _ = tiny_whisper(seed=1)
    set_audio_context(model, "dynamic", 1.0)
    x = features(1)
    y = x.clone()
    y[..., 200:] = 0.0
    with torch.no_grad():
        a = model.model.encoder(x[..., :200]).last_hidden_state
        b = model.model.encoder(y[..., :200]).last_hidden_state
    assert torch.equal(a, b)


def test_kind_survives_save_and_load_without_remote_code(tmp_path: Path) -> None:
    model, _ = tiny_whisper(seed=1)
    assert audio_context_of(model) == ("padded", None) and not is_dynamic(model)
    set_audio_context(model, "dynamic", 0.5)
    model.save_pretrained(tmp_path)
    stock = WhisperForConditionalGeneration.from_pretrained(tmp_path)
    assert type(stock.model.encoder) is WhisperEncoder  # plain transformers: padded inputs only
    assert audio_context_of(stock) == ("dynamic", 0.5)
    apply_audio_context(stock)
    assert isinstance(stock.model.encoder, DynamicWhisperEncoder)
    set_audio_context(stock, "padded")
    assert type(stock.model.encoder) is WhisperEncoder and not is_dynamic(stock)
    with pytest.raises(ValueError, match="context_multiple_s"):
        set_audio_context(stock, "dynamic")


def test_generate_from_short_features_decodes_the_short_encoder_output() -> None:
    model, _ = tiny_whisper(seed=1)
    set_audio_context(model, "dynamic", 1.0)
    x = features(1)[..., :400]
    kwargs = generate_inputs(model, x)
    assert "encoder_outputs" in kwargs
    assert kwargs["encoder_outputs"].last_hidden_state.shape[1] == 200
    with torch.no_grad():
        out = model.generate(**kwargs, language="fr", task="transcribe", max_new_tokens=5)
        states = model.model.encoder(x).last_hidden_state
        ids = torch.tensor([[model.generation_config.decoder_start_token_id]])
        logits = model(encoder_outputs=(states,), decoder_input_ids=ids).logits
    assert out.shape[0] == 1 and torch.isfinite(logits).all()
    assert "input_features" in generate_inputs(model, features(1))  # a full window: unchanged


def test_fit_features_cuts_only_dynamic_models() -> None:
    model, _ = tiny_whisper(seed=1)
    x = features(2)
    assert fit_features(model, x, [16_000, 40_000]) is x
    set_audio_context(model, "dynamic", 1.0)
    assert fit_features(model, x, [16_000, 40_000]).shape[-1] == 300  # 2.5 s -> 3 s


def test_consumer_loads_and_transcribes_a_dynamic_student(tmp_path: Path) -> None:
    from distilflow.models import load_whisper
    from distilflow.register.consumer import RegisteredWhisper
    from distilflow.student.build import save_student

    model, processor = tiny_whisper(seed=1)
    set_audio_context(model, "dynamic", 1.0)
    save_student(model, processor, tmp_path / "model", {})
    consumer = RegisteredWhisper.from_dir(tmp_path / "model")
    assert isinstance(consumer.model.model.encoder, DynamicWhisperEncoder)
    loaded = load_whisper(str(tmp_path / "model")).model
    assert isinstance(loaded.model.encoder, DynamicWhisperEncoder)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16_000 * 2)).astype(np.float32)
    assert consumer.features(audio).shape[-1] == 200
    text = consumer.transcribe(audio, language="fr", max_new_tokens=4)
    with torch.no_grad():
        states = consumer.model.model.encoder(consumer.features(audio)).last_hidden_state
        from transformers.modeling_outputs import BaseModelOutput

        ids = consumer.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            language="fr",
            task="transcribe",
            max_new_tokens=4,
        )
    assert text == processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
    # short clips batched by length buckets, the same transcripts as one at a time; a clip over
    # 30 s decoded long-form (the dynamic encoder reads the full 30 s windows)
    long = np.concatenate([audio] * 16)  # 32 s
    clips = [audio, long, audio[:8000]]
    many = consumer.transcribe_many(clips, "fr", max_new_tokens=4, batch_size=2)
    assert many[0] == text
    assert len(many) == 3 and all(isinstance(t, str) for t in many)


def test_a_dynamic_export_keeps_its_kind_and_matches_torch_on_cut_features(
    tmp_path: Path,
) -> None:
    """CTranslate2 is fed the clip's own length plus the margin, as the torch encoder reads it:
    the same tokens as torch (float32 export), and the export says what a server must feed."""
    import soundfile as sf

    from distilflow.export.convert import export_ct2, read_export_info
    from distilflow.export.verify import VerifyClip, verify_export
    from distilflow.models.dynamic import audio_context_of_dir, describe_audio_context
    from distilflow.register.model_card import CardInfo, render_model_card
    from distilflow.student.build import save_student
    from tests.helpers import tone

    model, processor = tiny_whisper(seed=1)
    set_audio_context(model, "dynamic", 0.5, margin_s=0.64)
    save_student(model, processor, tmp_path / "model", {})
    out = export_ct2(tmp_path / "model", tmp_path / "ct2", "float32")
    info = read_export_info(out)
    assert (info["audio_context"], info["context_multiple_s"]) == ("dynamic", 0.5)
    assert info["context_margin_s"] == 0.64
    paths = []
    for i, seconds in enumerate((1.2, 2.9)):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], tone(seconds, freq=300.0 + 200 * i), 16_000)
    clips = [VerifyClip(f"c{i}", str(p), "fr") for i, p in enumerate(paths)]
    report = verify_export(out, model, processor, clips, max_new_tokens=6, batch_size=1)
    for comp in report.comparisons:
        assert comp.ct2_tokens and comp.ct2_tokens == comp.torch_tokens  # the whole budget
    line = describe_audio_context(*audio_context_of_dir(tmp_path / "model"), 0.64)
    card = render_model_card(CardInfo("m", "1", "student", {"fr": 0.1}, {}, audio_context=line))
    assert "Audio context: dynamic" in card and "0.64 s of margin" in card


def test_a_dynamic_student_registers_and_both_consumers_decode_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered like any student: the version's tags say its kind, and `load_registered` and
    MLflow's generic pyfunc (distilflow installed) transcribe it as the consumer does; the
    ctranslate2 backend serves it through `@champion` on the clip's length plus margin."""
    import mlflow

    from distilflow.config import RegisterConfig, TrackingConfig
    from distilflow.register.consumer import RegisteredWhisper
    from distilflow.register.download import load_registered
    from distilflow.register.registry import Candidate, register_model_dir
    from distilflow.student.build import save_student

    model, processor = tiny_whisper(seed=1)
    set_audio_context(model, "dynamic", 1.0)
    save_student(model, processor, tmp_path / "model", {})
    tracking = TrackingConfig(f"sqlite:///{tmp_path / 'mlflow.db'}", "dyn")
    cfg = RegisterConfig("dyn-student", 0.02, str(tmp_path / "registry"))
    reg = register_model_dir(tracking, cfg, Candidate(tmp_path / "model", {"fr": 0.5}, {}))
    version = mlflow.MlflowClient(tracking.uri).get_model_version("dyn-student", reg.version)
    assert version.tags["audio_context"] == "dynamic"
    audio = (0.1 * np.random.default_rng(1).standard_normal(16_000 * 2)).astype(np.float32)
    expected = RegisteredWhisper.from_dir(tmp_path / "model").transcribe(
        audio, "fr", max_new_tokens=4
    )
    uri = "models:/dyn-student@champion"
    loaded = load_registered(uri, tmp_path / "cache", tracking=tracking.uri)
    assert isinstance(loaded.model.model.encoder, DynamicWhisperEncoder)
    assert loaded.transcribe(audio, "fr", max_new_tokens=4) == expected
    monkeypatch.setenv("DISTILFLOW_CACHE", str(tmp_path / "cache"))
    fast = load_registered(uri, tmp_path / "cache", tracking=tracking.uri, backend="ctranslate2")
    assert fast.ct2 is not None and (tmp_path / "cache" / "ct2") in fast.ct2.directory.parents
    info = json.loads((fast.ct2.directory / "distilflow_export.json").read_text("utf-8"))
    assert info["audio_context"] == "dynamic" and info["quantization"] == "int8"
    texts = fast.transcribe_many([audio, audio[:8000]], "fr", max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    mlflow.set_tracking_uri(tracking.uri)
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert pyfunc.predict({"audio": [audio], "language": ["fr"]}, {"max_new_tokens": 4}) == [
        expected
    ]
