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

SAMPLE_RATE = 16_000  # Hz, what Whisper's front end expects
CHUNK_SECONDS = 30  # s, one Whisper window
N_SAMPLES_CHUNK = SAMPLE_RATE * CHUNK_SECONDS  # samples in one window
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
