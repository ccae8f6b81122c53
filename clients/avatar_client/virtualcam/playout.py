"""The playout clock: the speech audio is the master, the camera follows it.

Frames from the avatar carry a position on one continuous media timeline (in samples of the
clock rate) and exactly their own slice of speech audio. The audio writer takes that audio in
small blocks, pads with silence whenever nothing has arrived, and records when each written
block will be heard. The camera thread asks which media position is being heard at a given
instant and shows the frame that goes with it, so picture and sound stay together whatever
the node or the network does, and the camera never waits for either.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PlayoutFrame:
    """One frame of the avatar, ready for the devices."""

    pos: int  # media position of its first audio sample (clock-rate samples)
    picture: np.ndarray | None = field(repr=False)  # in the camera's pixel format; None without a camera
    audio: np.ndarray = field(repr=False)  # int16 mono, exactly this frame's slice
    speaking: bool = False


@dataclass(frozen=True)
class AudioBlock:
    """What the writer sends next: node audio starting at `pos`, or filler silence (pos None)."""

    pos: int | None
    samples: np.ndarray


@dataclass(frozen=True)
class _Written:
    stream_pos: int  # samples written to the device before this block
    length: int
    pos: int | None


class Playout:
    """Thread-safe meeting point of the frame source, the audio writer and the camera thread.

    `prefill_ms` of node audio is gathered before sound starts, which absorbs arrival jitter.
    If audio still runs out (a gap), sound resumes as soon as more arrives and the delay kept
    from then on grows a little, so a jittery network stops causing gaps; when more than the
    kept delay stays queued for a while (clocks drifting, a burst after a stall, a calm
    network), quiet audio is skipped to bring the delay back down.
    """

    #: Written blocks remembered, for mapping device time back to media position (seconds).
    HISTORY_S = 4.0
    #: How long the queue must stay above target before it is trimmed (seconds).
    TRIM_WINDOW_S = 1.0
    #: Tolerated excess over the target before trimming (seconds).
    TRIM_SLACK_S = 0.04
    #: A frame quieter than this (int16 peak) may be skipped to trim the delay.
    QUIET_PEAK = 600
    #: Excess beyond which audio is skipped even if it is not quiet (seconds).
    FORCE_TRIM_S = 0.5
    #: After a gap the kept delay grows by this much, up to ADAPT_MAX_S over the prefill; it
    #: shrinks by a quarter of a step after every ADAPT_RELAX_S without a gap (seconds).
    ADAPT_STEP_S = 0.04
    ADAPT_MAX_S = 0.4
    ADAPT_RELAX_S = 10.0

    def __init__(self, rate: int, prefill_ms: int = 80, max_pictures: int = 90) -> None:
        self.rate = rate
        self.prefill = rate * prefill_ms // 1000
        self.target = self.prefill  # the delay kept: the prefill, plus what gaps taught
        self._resume_at = self.prefill  # queued audio needed before sound (re)starts
        self._clean = 0  # samples played since the last gap
        self._lock = threading.Lock()
        self._chunks: collections.deque[tuple[int, np.ndarray, bool]] = collections.deque()
        self._chunk_offset = 0  # samples of the head chunk already taken
        self._pending = 0
        self._playing = False
        self._low_water: int | None = None
        self._window_blocks = 0
        self._trim_debt = 0
        self._pictures: collections.deque[tuple[int, np.ndarray | None]] = collections.deque(maxlen=max_pictures)
        self._written: collections.deque[_Written] = collections.deque()
        self._stream_end = 0
        self._last_write: tuple[float, int, float] | None = None  # (time, stream_end, latency_s)
        self._last_pos: int | None = None  # media position after the last node block written
        self.idle_picture: np.ndarray | None = None
        self._shown: tuple[int, np.ndarray] | None = None
        #: Counters the status line reads.
        self.underruns = 0
        self.trimmed_samples = 0
        self.speaking = False

    # ------------------------------------------------------------------ input (frame source)

    def push(self, frame: PlayoutFrame) -> None:
        with self._lock:
            if self._last_pos is not None and frame.pos + len(frame.audio) <= self._last_pos:
                return  # older than what is already playing
            self._chunks.append((frame.pos, frame.audio, frame.speaking))
            self._pending += len(frame.audio)
            self._pictures.append((frame.pos, frame.picture))

    def drop_pending(self) -> None:
        """Forget audio not yet written (after an interrupt, or when the source restarts)."""
        with self._lock:
            self._chunks.clear()
            self._chunk_offset = 0
            self._pending = 0
            self._playing = False
            self._resume_at = self.prefill

    def source_restarted(self) -> None:
        """A new session begins: gather the full prefill again before its sound starts."""
        with self._lock:
            self._resume_at = self.prefill

    @property
    def pending_s(self) -> float:
        with self._lock:
            return self._pending / self.rate

    # ------------------------------------------------------------------ audio writer

    def next_audio_block(self, length: int) -> AudioBlock:
        """The next at most `length` samples for the device; silence while buffering."""
        with self._lock:
            if not self._playing:
                if self._pending < max(self._resume_at, 1):
                    return AudioBlock(None, np.zeros(length, np.int16))
                self._playing = True
                self._low_water, self._window_blocks = None, 0
            if self._pending == 0:
                self._playing = False
                self.underruns += 1
                self._resume_at = 1  # the gap is already as long as the lateness: no longer
                self.target = min(self.target + int(self.ADAPT_STEP_S * self.rate),
                                  self.prefill + int(self.ADAPT_MAX_S * self.rate))
                self._clean = 0
                return AudioBlock(None, np.zeros(length, np.int16))
            self._clean += length
            if self._clean >= self.ADAPT_RELAX_S * self.rate:
                self._clean = 0
                self.target = max(self.prefill, self.target - int(self.ADAPT_STEP_S * self.rate / 4))
            self._trim_if_behind(length)
            pos, samples, self.speaking = self._chunks[0]
            start = self._chunk_offset
            take = min(length, len(samples) - start)
            block = AudioBlock(pos + start, samples[start : start + take])
            self._chunk_offset += take
            if self._chunk_offset >= len(samples):
                self._chunks.popleft()
                self._chunk_offset = 0
            self._pending -= take
            return block

    def _trim_if_behind(self, block: int) -> None:
        """Keep the delay near its target: measure the queue's low water over a window, and
        if even that stayed above target, skip the excess in whole frames at frame starts,
        quiet ones first (a skipped quiet frame cannot be heard)."""
        self._low_water = self._pending if self._low_water is None else min(self._low_water, self._pending)
        self._window_blocks += 1
        if self._window_blocks * block >= self.TRIM_WINDOW_S * self.rate:
            excess = self._low_water - self.target
            self._trim_debt = excess if excess > self.TRIM_SLACK_S * self.rate else 0
            self._low_water, self._window_blocks = None, 0
        self._trim_debt = min(self._trim_debt, self._pending - self.target)
        force = self._trim_debt > self.FORCE_TRIM_S * self.rate
        while self._trim_debt > 0 and self._chunk_offset == 0 and len(self._chunks) > 1:
            _, samples, _ = self._chunks[0]
            if len(samples) > self._trim_debt:
                break
            if not force and np.abs(samples).max(initial=0) >= self.QUIET_PEAK:
                break  # wait for a quiet frame
            self._chunks.popleft()
            self._pending -= len(samples)
            self._trim_debt -= len(samples)
            self.trimmed_samples += len(samples)

    def written(self, block: AudioBlock, when: float, latency_s: float) -> None:
        """The writer handed `block` to the device at `when`; the device then held `latency_s`."""
        with self._lock:
            self._written.append(_Written(self._stream_end, len(block.samples), block.pos))
            self._stream_end += len(block.samples)
            self._last_write = (when, self._stream_end, latency_s)
            if block.pos is not None:
                self._last_pos = block.pos + len(block.samples)
            else:
                self.speaking = False
            keep = self._stream_end - int(self.HISTORY_S * self.rate)
            while self._written and self._written[0].stream_pos + self._written[0].length < keep:
                self._written.popleft()

    # ------------------------------------------------------------------ clock

    def _stream_pos_at(self, when: float) -> float | None:
        if self._last_write is None:
            return None
        t, end, latency = self._last_write
        return end - latency * self.rate + (when - t) * self.rate

    def media_pos_at(self, when: float) -> int | None:
        """The media position heard from the device at `when`; None during silence filler."""
        with self._lock:
            return self._media_pos_at(when)

    def _media_pos_at(self, when: float) -> int | None:
        s = self._stream_pos_at(when)
        if s is None or not self._written:
            return None
        last = self._written[-1]
        if s >= self._stream_end:  # beyond what is written: assume the media continues
            if last.pos is None:
                return None
            return int(last.pos + last.length + (s - self._stream_end))
        starts = [w.stream_pos for w in self._written]
        i = bisect.bisect_right(starts, s) - 1
        if i < 0:
            return None
        block = self._written[i]
        if block.pos is None:
            return None
        return int(block.pos + (s - block.stream_pos))

    def audio_time_of(self, pos: int) -> float | None:
        """When the sample at media position `pos` is (or was) heard, if it has been written."""
        with self._lock:
            if self._last_write is None:
                return None
            t, end, latency = self._last_write
            for block in reversed(self._written):
                if block.pos is not None and block.pos <= pos < block.pos + block.length:
                    stream_pos = block.stream_pos + (pos - block.pos)
                    return t + latency - (end - stream_pos) / self.rate
            return None

    # ------------------------------------------------------------------ camera

    def picture_for(self, when: float, lead_s: float) -> tuple[int | None, np.ndarray | None]:
        """The frame to show at `when`: the one whose audio is heard at `when + lead_s`.

        Returns (position, picture); position is None when an earlier picture is held (no
        speech clock yet, a gap, or nothing new), and picture is None before anything exists.
        """
        with self._lock:
            target = self._media_pos_at(when + lead_s)
            chosen: tuple[int, np.ndarray | None] | None = None
            if target is not None:
                while self._pictures and self._pictures[0][0] <= target:
                    pos, picture = self._pictures.popleft()
                    chosen = (pos, picture)
            if chosen is not None and chosen[1] is not None:
                self._shown = (chosen[0], chosen[1])
                return chosen[0], chosen[1]
            held = self._shown[1] if self._shown is not None else self.idle_picture
            return None, held


def monotonic() -> float:
    """The one wall clock every part of the virtual camera uses."""
    return time.monotonic()
