"""Audio sample handling: PCM parsing, sample-format conversion and streaming resampling.

Conventions: int16 samples map to float32 by dividing by 32768, so full scale is
[-1.0, 1.0) and the round trip int16 -> float32 -> int16 is exact.

`StreamResampler` wraps FFmpeg's libswresample through PyAV (the project's media
library, so no extra dependency). It resamples a stream chunk by chunk with the same
result as resampling it in one piece, holds back only the filter's half length
(well under a millisecond at speech rates), and its output count is exact after
`flush()`, so hours of audio cannot drift against the media clock.
"""

from __future__ import annotations

import fractions
import math
import numbers

import av
import numpy as np
import numpy.typing as npt

from avatar_node.errors import AvatarInputError

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8

_AV_FORMATS = {np.dtype(np.int16): "s16", np.dtype(np.float32): "flt"}


def validate_sample_rate(rate: int) -> int:
    """Return `rate` if it is a usable sample rate in Hz, else raise AvatarInputError."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral):
        raise AvatarInputError(
            f"sample_rate must be a whole number of Hz, e.g. 16000 or 48000; got {rate!r}", "BAD_AUDIO"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AvatarInputError(
            f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz; got {rate}", "BAD_AUDIO"
        )
    return int(rate)


def pcm_s16le_to_mono(data: bytes, channels: int) -> np.ndarray:
    """Parse interleaved signed 16-bit little-endian PCM into int16 mono (channels averaged)."""
    if (
        isinstance(channels, bool)
        or not isinstance(channels, numbers.Integral)
        or not 1 <= channels <= MAX_CHANNELS
    ):
        raise AvatarInputError(f"channels must be between 1 and {MAX_CHANNELS}; got {channels!r}", "BAD_AUDIO")
    size = len(data)
    if size % 2:
        raise AvatarInputError(
            f"PCM s16le audio has 2 bytes per sample, so its length must be even; got {size} bytes "
            "(a chunk was probably cut in the middle of a sample)",
            "BAD_AUDIO",
        )
    frame_bytes = 2 * int(channels)
    if size % frame_bytes:
        raise AvatarInputError(
            f"PCM s16le audio with {channels} channels must be a multiple of {frame_bytes} bytes "
            f"(one sample per channel); got {size} bytes",
            "BAD_AUDIO",
        )
    samples = np.frombuffer(data, dtype="<i2")
    if channels == 1:
        return samples.astype(np.int16)  # a writable, native-endian copy
    frames = samples.reshape(-1, int(channels)).astype(np.int32)
    return np.rint(frames.mean(axis=1)).astype(np.int16)


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dB full scale (-120 for silence or nothing)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) / 32768.0
    return 20.0 * math.log10(max(rms, 1e-6))


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 samples to float32 in [-1.0, 1.0)."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise TypeError(f"to_float32 expects int16 samples; got {samples.dtype}")
    return samples.astype(np.float32) * np.float32(1.0 / 32768.0)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1.0, 1.0) to int16, clipping anything outside (NaN becomes 0)."""
    scaled = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0) * np.float32(32768.0)
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


class StreamResampler:
    """Resample one mono stream delivered in chunks of any size.

    `process` returns what is ready so far; `flush` returns the rest at the end of
    the stream and resets the resampler for a new stream. Chunked output equals
    one-shot output, and after `flush` the stream has produced exactly
    round(samples_in * out_rate / in_rate) samples. Samples are int16 by default,
    or float32 with ``dtype=np.float32``. Not thread-safe: one per stream.
    """

    def __init__(self, in_rate: int, out_rate: int, dtype: npt.DTypeLike = np.int16) -> None:
        self.in_rate = validate_sample_rate(in_rate)
        self.out_rate = validate_sample_rate(out_rate)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _AV_FORMATS:
            raise ValueError(f"dtype must be int16 or float32; got {self.dtype}")
        self._format = _AV_FORMATS[self.dtype]
        self._time_base = fractions.Fraction(1, self.in_rate)
        self._resampler: av.AudioResampler | None = None
        self._samples_in = 0
        self._samples_out = 0

    @property
    def pending_s(self) -> float:
        """Audio taken in but not yet returned (the resampler's latency right now), in seconds."""
        return max(self._samples_in / self.in_rate - self._samples_out / self.out_rate, 0.0)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Feed the next chunk (1-D, this resampler's dtype); return the samples now ready."""
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise ValueError(f"expected a 1-D mono chunk; got shape {chunk.shape}")
        if chunk.dtype != self.dtype:
            raise TypeError(
                f"this resampler takes {self.dtype} samples; got {chunk.dtype} "
                "(convert with to_int16 / to_float32 first)"
            )
        if chunk.size == 0:
            return np.zeros(0, dtype=self.dtype)
        if self.in_rate == self.out_rate:
            self._samples_in += chunk.size
            self._samples_out += chunk.size
            return chunk.copy()

        if self._resampler is None:
            self._resampler = av.AudioResampler(format=self._format, layout="mono", rate=self.out_rate)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(chunk).reshape(1, -1), format=self._format, layout="mono"
        )
        frame.sample_rate = self.in_rate
        frame.time_base = self._time_base
        frame.pts = self._samples_in  # contiguous timestamps: the resampler never pads or drops
        self._samples_in += chunk.size
        out = self._collect(self._resampler.resample(frame))
        self._samples_out += out.size
        return out

    def flush(self) -> np.ndarray:
        """End of stream: return the held-back samples and reset for a new stream."""
        tail = np.zeros(0, dtype=self.dtype)
        if self._resampler is not None:
            tail = self._collect(self._resampler.resample(None))
        # Guarantee the exact total whatever the library's rounding at the very end.
        expected = (2 * self._samples_in * self.out_rate + self.in_rate) // (2 * self.in_rate)
        missing = expected - self._samples_out - tail.size
        if missing > 0:
            tail = np.concatenate([tail, np.zeros(missing, dtype=self.dtype)])
        elif missing < 0:
            tail = tail[: max(tail.size + missing, 0)]
        self._resampler = None
        self._samples_in = 0
        self._samples_out = 0
        return tail

    def _collect(self, frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=self.dtype)
        parts = [frame.to_ndarray().reshape(-1) for frame in frames]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out.astype(self.dtype, copy=False)
