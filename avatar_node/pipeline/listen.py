"""The user's voice, so the avatar can listen: kept at the engine rate and consumed at 1x with the frames.

Bounded: a live stream keeps half a second waiting (listening must not lag behind the
user); a render stream keeps ten seconds. Older audio is dropped, and the caller is
told once per stream so it can send listen audio at the pace it happens.
"""

from __future__ import annotations

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE
from avatar_node.media.audio import StreamResampler

from .buffers import SampleBuffer, silence

LIVE_BACKLOG_S = 0.5
RENDER_BACKLOG_S = 10.0


class ListenTrack:
    def __init__(self, live: bool, backlog_s: float | None = None) -> None:
        self._buffer = SampleBuffer(np.float32)
        self._read = 0
        if backlog_s is None:
            backlog_s = LIVE_BACKLOG_S if live else RENDER_BACKLOG_S
        self._limit = int(backlog_s * SPEECH_SAMPLE_RATE)
        self._resampler: StreamResampler | None = None
        self._rate = 0
        self.dropped_samples = 0

    @property
    def nbytes(self) -> int:
        """Memory the waiting audio takes."""
        return self._buffer.nbytes

    def push(self, samples: np.ndarray, rate: int) -> bool:
        """Add int16 mono at `rate`. Returns True if old audio had to be dropped."""
        dropped = False
        keep = int((self._limit / SPEECH_SAMPLE_RATE + 0.5) * rate)
        if len(samples) > keep:
            # Only the newest audio can be heard; convert no more than that.
            self.dropped_samples += (len(samples) - keep) * SPEECH_SAMPLE_RATE // rate
            samples, dropped = samples[-keep:], True
            self._read = self._buffer.end
        if rate != self._rate:
            self._resampler = None if rate == SPEECH_SAMPLE_RATE else StreamResampler(rate, SPEECH_SAMPLE_RATE)
            self._rate = rate
        converted = self._resampler.process(samples) if self._resampler else samples
        self._buffer.append(converted.astype(np.float32) * np.float32(1 / 32768))
        backlog = self._buffer.end - self._read
        if backlog > self._limit:
            self.dropped_samples += backlog - self._limit
            self._read = self._buffer.end - self._limit
            self._buffer.release_before(self._read)
            dropped = True
        return dropped

    def take(self, span: int, length: int) -> np.ndarray:
        """The next `length` samples (zeros where none came); advances by `span`."""
        if self._read >= self._buffer.end:
            return silence(length, np.float32)  # nobody is talking to the avatar
        window = self._buffer.window(self._read, length)
        self._read = min(self._buffer.end, self._read + span)
        self._buffer.release_before(self._read)
        return window
