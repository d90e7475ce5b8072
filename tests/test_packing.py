"""Timestamped clips packed into windows of one voice (distilflow/training/packing.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distilflow.audio import SAMPLE_RATE, load_audio
from distilflow.training.packing import (
    Piece,
    pack,
    steps_down,
    steps_up,
    window_audio,
    window_hash,
    window_texts,
    write_window_audio,
)

B = 1000  # timestamp tokens are ids >= 1000 here: <|0.00|> is 1000, <|1.00|> is 1050


def piece(h: str, seconds: float, voice: str = "anna", language: str = "fr") -> Piece:
    end = B + round(seconds / 0.02)
    return Piece(h, language, voice, seconds, (B, 5, 6, end))


def test_clips_of_a_voice_fill_windows_in_hash_order_with_their_timestamps_moved() -> None:
    pieces = [piece("c", 2.0), piece("a", 1.0), piece("b", 1.5)]
    (w,) = pack(pieces, 30.0, 0.3, B)
    # a at 0, b after 1.0 s + 0.3 s of gap (65 steps), c after b's 1.5 s + 0.3 s (155 steps)
    assert w.parts == (("a", 0), ("b", 65), ("c", 155))
    assert w.tokens == (B, 5, 6, B + 50, B + 65, 5, 6, B + 140, B + 155, 5, 6, B + 255)
    assert w.duration_s == pytest.approx(3.1 + 2.0)
    assert w.hash == window_hash(w.parts) and w.language == "fr"


def test_windows_hold_one_voice_and_language_and_never_pass_the_window() -> None:
    pieces = [piece(f"{i:02d}", 4.0) for i in range(10)]
    pieces += [piece("x1", 1.0, voice="ben"), piece("x2", 1.0, language="es")]
    windows = pack(pieces, 10.0, 0.5, B)
    anna = [w for w in windows if w.parts[0][0][0] != "x"]
    assert [len(w.parts) for w in anna] == [2, 2, 2, 2, 2]  # 4 + 0.5 + 4 = 8.5; a third: 13
    assert all(w.duration_s <= 10.0 for w in windows)
    assert {w.parts for w in windows if w.parts[0][0][0] == "x"} == {(("x1", 0),), (("x2", 0),)}
    assert sorted(h for w in windows for h, _ in w.parts) == sorted(p.hash for p in pieces)
    for w in windows:  # timestamps never go back: segments do not overlap
        stamps = [t for t in w.tokens if t >= B]
        assert stamps == sorted(stamps) and stamps[-1] - B <= round(w.duration_s / 0.02)


def test_a_timestamp_past_its_clip_is_held_at_the_clips_end() -> None:
    # the teacher may end a 1 s clip's segment at 1.20: the next clip starts at 1.3 s
    late = Piece("a", "fr", "anna", 1.0, (B, 5, B + 60))
    (w,) = pack([late, piece("b", 1.0)], 30.0, 0.3, B)
    assert w.tokens[:3] == (B, 5, B + 50) and w.tokens[3] == B + 65


def test_bad_window_options() -> None:
    with pytest.raises(ValueError, match="window_s"):
        pack([piece("a", 1.0)], 31.0, 0.3, B)
    with pytest.raises(ValueError, match="gap_s"):
        pack([piece("a", 1.0)], 30.0, -1.0, B)
    assert steps_up(0.3) == 15 and steps_up(0.301) == 16 and steps_up(1.0) == 50
    assert steps_down(2.3) == 115 and steps_down(2.319) == 115  # 2.3 / 0.02 is 114.99...


def test_a_clips_voice_is_its_speaker_else_its_source() -> None:
    from distilflow.training.states import voice_of

    df = pd.DataFrame(
        {"speaker": pd.array(["anna", None, None], dtype="string"), "source": ["s", "t", None]}
    )
    assert [voice_of(r) for r in df.itertuples()] == ["anna", "t", ""]
    assert voice_of(pd.DataFrame({"hash": ["a"]}).iloc[0]) == ""  # neither column


def test_window_audio_places_each_clip_at_its_offset(tmp_path: Path) -> None:
    clips = {
        "a": np.full(SAMPLE_RATE, 0.5, np.float32),
        "b": np.full(SAMPLE_RATE // 2, -0.25, np.float32),
    }
    (w,) = pack([piece("a", 1.0), piece("b", 0.5)], 30.0, 0.3, B)
    audio = window_audio(w, clips.__getitem__)
    assert len(audio) == round(1.8 * SAMPLE_RATE)
    assert np.all(audio[:SAMPLE_RATE] == 0.5) and np.all(
        audio[SAMPLE_RATE : round(1.3 * SAMPLE_RATE)] == 0
    )
    assert np.all(audio[round(1.3 * SAMPLE_RATE) :] == -0.25)
    paths = write_window_audio([w], clips.__getitem__, tmp_path)
    stored = load_audio(paths[w.hash])
    assert np.allclose(stored, audio, atol=1e-4)
    mtime = Path(paths[w.hash]).stat().st_mtime_ns
    assert write_window_audio([w], clips.__getitem__, tmp_path) == paths  # written once
    assert Path(paths[w.hash]).stat().st_mtime_ns == mtime
    assert window_texts([w], {"a": " un ", "b": "deux"}) == {w.hash: "un deux"}


def test_packed_examples_learn_the_windows_segments() -> None:
    """With a window, the timestamped clips of a voice become one example each window (behind
    the prompt without <|notimestamps|>), counted once as clips and once as windows; the other
    clips train alone on their text."""
    from distilflow.testing import tiny_whisper
    from distilflow.training.data import split_of
    from distilflow.training.states import build_examples
    from distilflow.training.targets import TargetRule
    from distilflow.training.timestamps import has_timestamps

    model, processor = tiny_whisper()
    gen, tok = model.generation_config, processor.tokenizer
    begin = int(gen.no_timestamps_token_id) + 1
    hashes = [f"{i:04d}" for i in range(40) if split_of(f"{i:04d}", 0.01) == "train"]
    text = tok(" some words", add_special_tokens=False).input_ids
    df = pd.DataFrame(
        {
            "hash": hashes,
            "language": "fr",
            "reference": None,
            "label_ok": True,
            "teacher_error": None,
            "token_ids": [[begin, *text, begin + 100]] * len(hashes),
            "duration_s": 2.0,
            "speaker": "anna",
            "source": "s",
        }
    )
    rule = TargetRule("pseudo", timestamp_share=0.5, window_s=30.0, gap_s=0.3)
    train, _, kinds, windows = build_examples(df, gen, int(gen.eos_token_id), 0.01, tok, rule)
    stamped = [h for h in hashes if has_timestamps(h, 0.5)]
    assert kinds["timestamps"] == len(stamped) == sum(len(w.parts) for w in windows)
    assert kinds["windows"] == len(windows) == -(-len(stamped) // 13)  # 13 clips of 2.3 s in 30 s
    alone = [e for e in train if e.hash in hashes]
    assert {e.hash for e in alone} == set(hashes) - set(stamped)
    by_hash = {e.hash: e for e in train}
    for w in windows:
        e = by_hash[w.hash]
        assert int(gen.no_timestamps_token_id) not in e.decoder_input_ids
        assert e.labels[2:-1] == list(w.tokens)
        assert w.tokens[-1] - begin == w.parts[-1][1] + 100
