"""PCM helpers: converting what callers hold into the wire's s16le, chunking it, reading files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

#: The sample rates the node accepts for speech and listen audio.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
#: Longest audio one message carries; keeps messages small and latency low.
CHUNK_MS = 100


@dataclass(frozen=True)
class Pcm:
    """Interleaved s16le PCM ready for the wire."""

    data: bytes
    sample_rate: int
    channels: int

    @property
    def frames(self) -> int:
        """Samples per channel."""
        return len(self.data) // (2 * self.channels)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def check_sample_rate(sample_rate: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
            "resample the audio first (read_audio_file does this for files)"
        )


def to_pcm(audio: np.ndarray | bytes | bytearray | memoryview, sample_rate: int, channels: int = 1) -> Pcm:
    """Convert audio to interleaved s16le.

    `audio` is either raw s16le bytes (interleaved, `channels` wide), an int16 array, or a
    float array with samples in [-1, 1] (clipped). Arrays are (samples,) for mono or
    (samples, channels) for interleaved multichannel; `channels` is then taken from the shape.
    """
    check_sample_rate(sample_rate)
    if isinstance(audio, (bytes, bytearray, memoryview)):
        data = bytes(audio)
        if channels < 1:
            raise ValueError("channels must be at least 1")
        if len(data) % (2 * channels):
            raise ValueError(
                f"PCM bytes must be whole s16le samples for {channels} channel(s); got {len(data)} bytes"
            )
        return Pcm(data, sample_rate, channels)

    array = np.asarray(audio)
    if array.ndim == 1:
        channels = 1
    elif array.ndim == 2:
        channels = array.shape[1]
        if channels > 8:
            raise ValueError(
                f"audio array of shape {array.shape} looks channel-first; pass (samples, channels)"
            )
    else:
        raise ValueError(f"audio must be (samples,) or (samples, channels); got shape {array.shape}")
    if array.dtype == np.int16:
        samples = array
    elif np.issubdtype(array.dtype, np.floating):
        samples = np.round(np.clip(array, -1.0, 1.0) * 32767.0).astype(np.int16)
    else:
        raise TypeError(f"audio must be int16 or float samples; got {array.dtype}")
    return Pcm(np.ascontiguousarray(samples, dtype="<i2").tobytes(), sample_rate, channels)


def chunk_pcm(pcm: Pcm, chunk_ms: int = CHUNK_MS) -> Iterator[bytes]:
    """Split PCM into pieces of at most `chunk_ms`, on whole-sample boundaries."""
    frames_per_chunk = max(1, pcm.sample_rate * chunk_ms // 1000)
    step = frames_per_chunk * 2 * pcm.channels
    for start in range(0, len(pcm.data), step):
        yield pcm.data[start : start + step]


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode any audio file FFmpeg reads (wav, mp3, ogg, flac, m4a...) to mono int16.

    Returns (samples, sample_rate). The file's own rate is kept when the node accepts it;
    otherwise the audio is resampled to 48 kHz.
    """
    try:
        container = av.open(str(path))
    except (av.error.FileNotFoundError, FileNotFoundError):
        raise FileNotFoundError(f"no such audio file: {path}") from None
    except av.error.InvalidDataError:
        raise ValueError(f"{path} is not an audio file FFmpeg can read") from None
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            rate = 48_000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        pieces: list[np.ndarray] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    return samples.astype(np.int16, copy=False), rate
