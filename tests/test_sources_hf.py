"""HFDatasetSource on datasets built in the test and saved locally (no hub access)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict, disable_progress_bars
from datasets import config as datasets_config

from distilflow.sources.base import BAD_METADATA, MISSING_FILE, SourceError
from distilflow.sources.hf import HFDatasetSource

from .helpers import by_id, tone, tone_bytes

disable_progress_bars()


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_dataset writes lock files under its cache: keep them in the test's folder."""
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def audio_dataset(columns: dict[str, list[object]], audio: list[dict[str, object]]) -> Dataset:
    """A Dataset whose ``audio`` column has the Audio feature (decode=True, as on the hub).

    Built from an Arrow table and cast, because ``Audio.encode_example`` needs torchcodec.
    """
    table = pa.table({"audio": pa.array(audio), **{k: pa.array(v) for k, v in columns.items()}})
    return Dataset(table).cast_column("audio", Audio())


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A DatasetDict (train, test) saved with save_to_disk; ``train`` has no id column."""
    clip = tmp_path / "on_disk.wav"
    clip.write_bytes(tone_bytes(550, "WAV"))
    train = audio_dataset(
        {"sentence": ["Bonjour.", " ", "Hallo."], "language": ["fr", "fr", None]},
        [
            {"bytes": tone_bytes(440), "path": "a.flac"},
            {"bytes": None, "path": str(clip)},  # save_to_disk embeds this file's bytes
            {"bytes": tone_bytes(880), "path": "c.flac"},
        ],
    )
    test = audio_dataset(
        {"id": ["utt-1", "utt-2"], "text": ["One.", "Two."], "speaker_id": ["s1", "s2"]},
        [{"bytes": tone_bytes(300), "path": None}, {"bytes": tone_bytes(350), "path": None}],
    )
    DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "dd")
    return tmp_path / "dd"


def test_saved_dataset_dict_train_split(saved: Path) -> None:
    items = list(HFDatasetSource(str(saved), language="de").items())
    assert [i.source_id for i in items] == ["train/0", "train/1", "train/2"]
    assert [i.text for i in items] == ["Bonjour.", None, "Hallo."]
    assert [i.language for i in items] == ["fr", "fr", "de"]  # missing: configured language
    assert all(i.problem is None and i.source == str(saved) for i in items)
    assert items[0].read() == tone_bytes(440)
    assert items[1].read() == tone_bytes(550, "WAV")  # embedded by save_to_disk


def test_saved_split_with_id_column_and_text_fallback(saved: Path) -> None:
    items = by_id(list(HFDatasetSource(str(saved), split="test").items()))
    assert set(items) == {"utt-1", "utt-2"}
    assert items["utt-2"].text == "Two."  # no "sentence" column: falls back to "text"
    assert items["utt-2"].speaker == "s2"
    assert items["utt-2"].language is None
    data = items["utt-1"].read()
    samples, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == 16_000 and np.allclose(samples, tone(0.2, freq=300), atol=1e-4)


def test_missing_split_and_missing_audio_column(saved: Path) -> None:
    with pytest.raises(SourceError, match="no split 'dev'"):
        list(HFDatasetSource(str(saved), split="dev").items())
    with pytest.raises(SourceError, match="no audio column 'speech'"):
        list(HFDatasetSource(str(saved), audio_column="speech").items())


def test_single_saved_dataset_with_path_column(tmp_path: Path) -> None:
    ds = audio_dataset(
        {
            "path": ["common_voice_ca_1.mp3", "common_voice_ca_2.mp3"],
            "sentence": ["Hola.", "Adéu."],
            "locale": ["ca", "ca"],
            "client_id": ["c1", "c2"],
        },
        [
            {"bytes": tone_bytes(400, "MP3"), "path": None},
            {"bytes": tone_bytes(500, "MP3"), "path": None},
        ],
    )
    ds.save_to_disk(tmp_path / "single")
    items = list(HFDatasetSource(str(tmp_path / "single"), split="validation").items())
    assert [i.source_id for i in items] == ["common_voice_ca_1.mp3", "common_voice_ca_2.mp3"]
    assert [(i.language, i.speaker) for i in items] == [("ca", "c1"), ("ca", "c2")]
    assert items[1].read() == tone_bytes(500, "MP3")
    forced = list(
        HFDatasetSource(str(tmp_path / "single"), language_column=None, language="es").items()
    )
    assert {i.language for i in forced} == {"es"}


def test_raw_array_rows_are_encoded_to_wav(tmp_path: Path) -> None:
    table = pa.table(
        {
            "audio": pa.array(
                [
                    {"array": tone(0.2, 8_000, 440).tolist(), "sampling_rate": 8_000},
                    {"array": None, "sampling_rate": None},
                ]
            ),
            "transcription": ["raw", "empty"],
        }
    )
    Dataset(table).save_to_disk(tmp_path / "raw")
    items = list(HFDatasetSource(str(tmp_path / "raw")).items())
    assert items[0].problem is None and items[0].text == "raw"
    samples, sr = sf.read(io.BytesIO(items[0].read()), dtype="float32")
    assert sr == 8_000 and np.array_equal(samples, tone(0.2, 8_000, 440))
    assert items[1].problem == BAD_METADATA


def test_streamed_parquet_folder_with_path_strings(tmp_path: Path) -> None:
    """A local data folder goes through load_dataset(streaming=True), as a hub id would."""
    folder = tmp_path / "pq"
    (folder / "clips").mkdir(parents=True)
    (folder / "clips" / "x.wav").write_bytes(tone_bytes(700, "WAV"))
    table = pa.table(
        {
            "audio": ["clips/x.wav", str(tmp_path / "gone.wav"), None],
            "sentence": ["relative", "gone", "no audio"],
            "language": ["en", "en", "en"],
        }
    )
    pq.write_table(table, folder / "train.parquet")
    items = list(HFDatasetSource(str(folder), streaming=True).items())
    assert [i.problem for i in items] == [None, MISSING_FILE, BAD_METADATA]
    assert items[0].read() == tone_bytes(700, "WAV")  # relative path: against the folder
    with pytest.raises(SourceError, match="does not exist"):
        items[1].read()


def test_streamed_parquet_with_audio_feature(tmp_path: Path) -> None:
    ds = audio_dataset(
        {"sentence": ["un", "deux"]},
        [
            {"bytes": tone_bytes(410), "path": "1.flac"},
            {"bytes": tone_bytes(420), "path": "2.flac"},
        ],
    )
    (tmp_path / "hubish").mkdir()
    ds.to_parquet(str(tmp_path / "hubish" / "train.parquet"))
    items = list(HFDatasetSource(str(tmp_path / "hubish"), language="fr").items())
    assert [(i.source_id, i.text, i.language) for i in items] == [
        ("train/0", "un", "fr"),
        ("train/1", "deux", "fr"),
    ]
    assert items[1].read() == tone_bytes(420)


def test_unloadable_uri_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot load split 'train'"):
        list(HFDatasetSource(str(tmp_path / "nothing-here")).items())
