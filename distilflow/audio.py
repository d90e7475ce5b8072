"""Audio front end: decode any container, downmix, resample to 16 kHz, hash, store as FLAC.

A clip's identity is the sha256 of its 16 kHz mono 16-bit PCM samples. The store keeps exactly
those samples losslessly (FLAC, PCM_16), so the hash can be recomputed from the stored file.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from distilflow.atomic import atomic_write_bytes

# Whisper's audio front end, each length derived from the ones above it as in openai/whisper's
# audio.py; every other module imports these instead of writing the numbers.
SAMPLE_RATE = 16_000  # Hz, what Whisper's front end expects
N_FFT = 400  # samples in one STFT window (25 ms)
HOP_LENGTH = 160  # samples between two log-mel frames (10 ms)
CHUNK_LENGTH = 30  # s, one Whisper window (the padded input)
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in one window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 log-mel frames in one window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 log-mel frames a second
ENCODER_STRIDE = 2  # log-mel frames per encoder position (the encoder's second conv, stride 2)
N_AUDIO_CTX = N_FRAMES // ENCODER_STRIDE  # 1500 encoder positions in one window
N_SAMPLES_PER_TOKEN = HOP_LENGTH * ENCODER_STRIDE  # 320 samples per encoder position (20 ms)
TOKENS_PER_SECOND = SAMPLE_RATE // N_SAMPLES_PER_TOKEN  # 50 encoder positions a second
TIME_PRECISION = N_SAMPLES_PER_TOKEN / SAMPLE_RATE  # 0.02 s: one position, one timestamp step
INT16_SCALE = 32767.0  # float [-1, 1] -> int16


class AudioDecodeError(Exception):
    """The bytes are not audio that soundfile or PyAV can decode."""


@dataclass(frozen=True)
class Decoded:
    """Decoded audio, as float32 in [-1, 1]."""

    samples: np.ndarray  # float32, shape (n,) mono or (n, channels)
    sample_rate: int  # Hz of ``samples``


def _decode_soundfile(data: bytes) -> Decoded:
    samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return Decoded(np.asarray(samples, dtype=np.float32), int(sr))


def _decode_pyav(data: bytes) -> Decoded:
    import av  # imported lazily: only codecs soundfile lacks (mp3 on old libsndfile, G.722, ...)

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.audio[0]
            sr = int(stream.sample_rate)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
            parts = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except (IndexError, av.error.FFmpegError, ValueError) as exc:
        raise AudioDecodeError(f"PyAV cannot decode: {exc}") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return Decoded(samples.astype(np.float32), sr)


def decode(data: bytes) -> Decoded:
    """Decode encoded audio bytes with soundfile, falling back to PyAV for other codecs."""
    if not data:
        raise AudioDecodeError("no bytes")
    try:
        return _decode_soundfile(data)
    except (sf.LibsndfileError, RuntimeError, TypeError) as first:
        try:
            return _decode_pyav(data)
        except AudioDecodeError as second:
            raise AudioDecodeError(f"soundfile: {first}; {second}") from second


def to_mono_16k(decoded: Decoded) -> np.ndarray:
    """Downmix to mono and resample to 16 kHz (float32)."""
    samples = decoded.samples
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if decoded.sample_rate != SAMPLE_RATE and samples.size:
        samples = soxr.resample(samples, decoded.sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def quantize(samples: np.ndarray) -> np.ndarray:
    """Float samples -> int16 PCM (clipped), the canonical stored form."""
    pcm: np.ndarray = np.round(np.clip(samples, -1.0, 1.0) * INT16_SCALE).astype("<i2")
    return pcm


def pcm_hash(pcm: np.ndarray) -> str:
    """sha256 of 16 kHz mono int16 little-endian PCM: the clip's content identity."""
    return hashlib.sha256(np.ascontiguousarray(pcm, dtype="<i2").tobytes()).hexdigest()


def bytes_hash(data: bytes) -> str:
    """sha256 of raw bytes (used to recognise unchanged source files)."""
    return hashlib.sha256(data).hexdigest()


def store_path(store: Path, clip_hash: str) -> Path:
    """Content-addressed location of a clip in the FLAC store."""
    return store / clip_hash[:2] / f"{clip_hash}.flac"


def write_flac(path: Path, pcm: np.ndarray) -> None:
    """Store int16 PCM as 16 kHz FLAC, atomically."""
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    atomic_write_bytes(path, buf.getvalue())


def load_audio(path: Path | str) -> np.ndarray:
    """Read a stored clip (or any file) as 16 kHz mono float32."""
    return to_mono_16k(decode(Path(path).read_bytes()))
