"""Feature padding: OpenAI's log-mel zeros past the clip, recorded per model, honoured on load."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from distilflow.audio import load_audio
from distilflow.label.teacher import GenerationSettings, with_padding_of
from distilflow.models.encoder_cache import states_cache
from distilflow.models.features import (
    AUDIO,
    LOG_MEL,
    LogMelPaddedExtractor,
    clip_samples,
    padding_for,
    padding_of,
    with_padding,
    zero_past_clips,
)
from distilflow.models.load import load_whisper
from distilflow.student.build import save_student

from .helpers import DEMO_CORPUS

CLIP = DEMO_CORPUS / "audio" / "en_calling.flac"


def test_zero_past_clips_on_numpy_torch_and_lists() -> None:
    for batch in (np.ones((2, 3, 10)), torch.ones(2, 3, 10), [np.ones((3, 10)), np.ones((3, 10))]):
        zero_past_clips(batch, [320, 1000], hop=100)  # 3 frames, then 10 (none past)
        first, second = np.asarray(batch[0]), np.asarray(batch[1])
        assert first[:, :3].min() == 1 and first[:, 3:].max() == 0
        assert second.min() == 1
    with pytest.raises(ValueError, match="2 feature rows for 1 clips"):
        zero_past_clips(np.ones((2, 3, 10)), [5])


def test_clip_samples_reads_inputs_as_transformers_does() -> None:
    assert clip_samples(np.zeros(7)) == [7]
    assert clip_samples([0.0] * 5) == [5]  # a list of floats is one clip
    assert clip_samples([np.zeros(3), np.zeros(4)]) == [3, 4]
    assert clip_samples(np.zeros((2, 6))) == [6, 6]


def test_log_mel_padding_is_faster_whispers_front_end() -> None:
    """Our features of a real clip are faster-whisper's: its log-mel, zero-padded to 3000."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = load_audio(CLIP)
    ours = with_padding(WhisperFeatureExtractor(), LOG_MEL)(
        audio, sampling_rate=16_000, return_tensors="np"
    ).input_features[0]
    theirs = FeatureExtractor()(audio)
    theirs = pad_or_trim(theirs[:, : audio.size // 160])  # transcribe's content frames
    assert ours.shape == theirs.shape == (80, 3000)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    plain = WhisperFeatureExtractor()(audio, sampling_rate=16_000, return_tensors="np")
    past = plain.input_features[0][:, audio.size // 160 :]
    assert np.median(past) < -0.5  # transformers: the log-mel floor of silence, not zero


def test_padded_extractor_saves_as_a_plain_one(tmp_path: Path) -> None:
    padded = with_padding(WhisperFeatureExtractor(), LOG_MEL)
    assert isinstance(padded, LogMelPaddedExtractor) and padding_of(padded) == LOG_MEL
    assert with_padding(padded, LOG_MEL) is padded
    padded.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["feature_extractor_type"] == "WhisperFeatureExtractor"
    back = WhisperFeatureExtractor.from_pretrained(tmp_path)
    assert type(back) is WhisperFeatureExtractor and padding_of(back) == AUDIO
    assert padding_of(with_padding(padded, AUDIO)) == AUDIO
    with pytest.raises(ValueError, match="one of audio, log_mel"):
        with_padding(padded, "zeros")  # type: ignore[arg-type]


def test_padding_for_reads_the_student_record() -> None:
    def config(record: object) -> SimpleNamespace:
        return SimpleNamespace(distilflow_student=record)

    assert padding_for(config(None)) == LOG_MEL  # a hub or registry Whisper: as OpenAI feeds it
    assert padding_for(config({"audio_context": "padded"})) == AUDIO  # a student from before
    assert padding_for(config({"feature_padding": "log_mel"})) == LOG_MEL
    with pytest.raises(ValueError, match="unknown feature_padding 'zeros'"):
        padding_for(config({"feature_padding": "zeros"}))


def test_models_load_with_their_padding_and_students_record_it(
    tiny_dir: Path, tmp_path: Path
) -> None:
    teacher = load_whisper(str(tiny_dir))
    assert padding_of(teacher.processor.feature_extractor) == LOG_MEL
    save_student(teacher.model, teacher.processor, tmp_path / "student", {})
    record = json.loads((tmp_path / "student" / "distilflow_student.json").read_text())
    assert record["feature_padding"] == LOG_MEL
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["distilflow_student"]["feature_padding"] == LOG_MEL
    # a student trained on transformers' padding is served with it
    old = load_whisper(str(tmp_path / "student"))
    old.processor.feature_extractor = with_padding(old.processor.feature_extractor, AUDIO)
    save_student(old.model, old.processor, tmp_path / "old", {})
    assert padding_of(load_whisper(str(tmp_path / "old")).processor.feature_extractor) == AUDIO


def test_caches_key_on_the_padding(tiny_dir: Path, tmp_path: Path) -> None:
    loaded = load_whisper(str(tiny_dir))
    encoder, fe = loaded.model.model.encoder, loaded.processor.feature_extractor
    ours = states_cache(tmp_path, encoder, fe)
    other = states_cache(tmp_path, encoder, with_padding(fe, AUDIO))
    assert ours.dir != other.dir and ours.dir.name.endswith("-log_mel")
    settings = GenerationSettings("transformers", 8, 1, False)
    plain = SimpleNamespace(feature_extractor=with_padding(fe, AUDIO))
    ours_hash = with_padding_of(settings, loaded.processor).hash()
    assert ours_hash != with_padding_of(settings, plain).hash()


def test_the_consumer_feeds_a_student_as_recorded(tiny_dir: Path, tmp_path: Path) -> None:
    from distilflow.register.consumer import RegisteredWhisper

    teacher = load_whisper(str(tiny_dir))
    save_student(teacher.model, teacher.processor, tmp_path / "new", {})
    consumer = RegisteredWhisper.from_dir(tmp_path / "new")
    assert padding_of(consumer.processor.feature_extractor) == LOG_MEL
    audio = load_audio(CLIP)
    features = consumer.features(audio)
    assert features[..., audio.size // 160 :].abs().max() == 0
    teacher.processor.feature_extractor = with_padding(teacher.processor.feature_extractor, AUDIO)
    save_student(teacher.model, teacher.processor, tmp_path / "old", {})
    old = RegisteredWhisper.from_dir(tmp_path / "old")
    assert old.features(audio)[..., audio.size // 160 + 1 :].max() < 0  # the log-mel of silence


@pytest.mark.parametrize("padding", [LOG_MEL, AUDIO])
def test_mlflow_pyfunc_without_distilflow_pads_as_recorded(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, padding: str
) -> None:
    """Where distilflow is not installed the pyfunc's plain-transformers path repeats the padding
    rule (its saved code cannot import ours): it transcribes as our consumer does."""
    import sys

    import mlflow

    from distilflow.decoding.loop_guard import NO_GUARD
    from distilflow.register.consumer import RegisteredWhisper
    from distilflow.register.pyfunc import log_pyfunc

    teacher = load_whisper(str(tiny_dir))
    teacher.processor.feature_extractor = with_padding(teacher.processor.feature_extractor, padding)
    save_student(teacher.model, teacher.processor, tmp_path / "student", {})
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # its own experiment: an earlier test's active one does not exist in this store
    with mlflow.start_run(experiment_id=mlflow.create_experiment("pyfunc-plain")):
        uri = log_pyfunc(tmp_path / "student")
    audio = load_audio(CLIP)[:16_000]
    ours = RegisteredWhisper.from_dir(tmp_path / "student", max_new_tokens=6, guard=NO_GUARD)
    monkeypatch.setitem(sys.modules, "distilflow.register.consumer", None)  # not installed
    pyfunc = mlflow.pyfunc.load_model(uri)
    plain = pyfunc.unwrap_python_model()
    assert plain.impl is None and plain.zero_pad == (padding == LOG_MEL)
    got = pyfunc.predict({"audio": [audio], "language": ["en"]}, {"max_new_tokens": 6})
    assert got == [ours.transcribe(audio, language="en")]
