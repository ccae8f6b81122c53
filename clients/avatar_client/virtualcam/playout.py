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
from collections.abc import Callable
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

    Sound starts once `prefill_ms` of audio is queued. From then on the queue's low water
    (its level just before a late frame arrives) is kept near a goal that follows how regularly
    frames arrive: the 99th percentile of their lateness over the last seconds plus a margin,
    never under the prefill less a frame. Below the goal, silence is added before a quiet
    frame between turns; above it, such frames are skipped (neither can be heard, and speech
    is never cut or stretched unless the queue has grown past FORCE_TRIM_S). If audio runs out anyway
    (a gap), sound resumes as soon as more arrives and the goal is raised for a while.
    """

    #: Written blocks remembered, for mapping device time back to media position (seconds).
    HISTORY_S = 4.0
    #: The queue's low water is judged over this window (seconds).
    WINDOW_S = 1.0
    #: Tolerated distance from the goal before adding or skipping audio (seconds).
    SLACK_S = 0.02
    #: A frame between turns quieter than this (int16 peak) may be stretched or skipped.
    QUIET_PEAK = 600
    #: Excess beyond which audio is skipped even if it is not quiet (seconds).
    FORCE_TRIM_S = 0.5
    #: Arrival lateness is measured over this window (seconds), and a margin added.
    JITTER_WINDOW_S = 10.0
    JITTER_MARGIN_S = 0.02
    #: After a gap the goal rises by this much, at most MAX_EXTRA_S over the prefill; it
    #: falls back by a quarter step after every RELAX_S without a gap (seconds).
    GAP_STEP_S = 0.04
    MAX_EXTRA_S = 0.4
    RELAX_S = 10.0

    def __init__(
        self, rate: int, prefill_ms: int = 80, max_pictures: int = 90, clock: Callable[[], float] | None = None
    ) -> None:
        self.rate = rate
        self._clock = clock or monotonic
        self.prefill = rate * prefill_ms // 1000
        self._lock = threading.Lock()
        self._chunks: collections.deque[tuple[int, np.ndarray, bool]] = collections.deque()
        self._chunk_offset = 0  # samples of the head chunk already taken
        self._pending = 0
        self._playing = False
        self._playing_since: float | None = None
        self._resume_at = self.prefill  # queued audio needed before sound (re)starts
        self._frame_len = 0
        self._arrivals: collections.deque[tuple[float, int]] = collections.deque()
        self._gap_floor = 0
        self._clean = 0  # samples played since the last gap
        self._low_water: int | None = None
        self._window = 0
        self._trim_debt = 0
        self._stretch_debt = 0
        self._pictures: collections.deque[tuple[int, np.ndarray | None]] = collections.deque(maxlen=max_pictures)
        self._written: collections.deque[_Written] = collections.deque()
        self._stream_end = 0
        self._last_write: tuple[float, int, float] | None = None  # (time, stream_end, latency_s)
        self._audio_log: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (stream_pos, samples)
        #: Seconds to add to the device's own latency figure, from listening to the microphone
        #: itself (see mic_monitor.py): some servers report more or less than they delay.
        self.latency_correction = 0.0
        self._last_pos: int | None = None  # media position after the last node block written
        self.idle_picture: np.ndarray | None = None
        self._shown: tuple[int, np.ndarray] | None = None
        self._barge_in = False  # after drop_pending, until sound plays again
        #: The low water kept (samples), and counters the status line reads.
        self.goal = 0
        self.underruns = 0
        self.trimmed_samples = 0
        #: Of those, speech cut to catch up with a backlog (FORCE_TRIM_S), and how many times.
        self.speech_cut_samples = 0
        self.speech_cuts = 0
        self.stretched_samples = 0
        self.speaking = False

    # ------------------------------------------------------------------ input (frame source)

    def push(self, frame: PlayoutFrame) -> None:
        now = self._clock()
        with self._lock:
            if self._last_pos is not None and frame.pos + len(frame.audio) <= self._last_pos:
                return  # older than what is already playing
            self._chunks.append((frame.pos, frame.audio, frame.speaking))
            self._pending += len(frame.audio)
            self._frame_len = len(frame.audio)
            self._pictures.append((frame.pos, frame.picture))
            self._arrivals.append((now, frame.pos))
            while self._arrivals[0][0] < now - self.JITTER_WINDOW_S:
                self._arrivals.popleft()

    def drop_pending(self) -> None:
        """Forget audio not yet written, and pictures not yet shown (after an interrupt).

        Until sound plays again, each picture that arrives is shown at once: after a barge-in
        the source's next pictures close the mouth, and waiting for their audio's prefill
        would hold the open mouth of the last picture shown meanwhile."""
        with self._lock:
            self._pictures.clear()
            self._barge_in = True
            self._chunks.clear()
            self._chunk_offset = 0
            self._pending = 0
            self._playing = False
            self._playing_since = None
            self._resume_at = self.prefill

    def source_restarted(self) -> None:
        """A new session begins: its timeline is new, and its sound starts after a full prefill."""
        with self._lock:
            self._resume_at = self.prefill
            self._arrivals.clear()

    def steady_for(self) -> float:
        """Seconds the source's sound has played without a gap (0 when it is not playing)."""
        with self._lock:
            return 0.0 if self._playing_since is None else self._clock() - self._playing_since

    @property
    def pending_s(self) -> float:
        with self._lock:
            return self._pending / self.rate

    # ------------------------------------------------------------------ audio writer

    def next_audio_block(self, length: int) -> AudioBlock:
        """The next at most `length` samples for the device; silence while waiting for audio."""
        with self._lock:
            if not self._playing:
                if self._pending < max(self._resume_at, 1):
                    return AudioBlock(None, np.zeros(length, np.int16))
                self._playing = True
                self._playing_since = self._clock()
                self._barge_in = False
                self._low_water, self._window = None, 0
            if self._pending == 0:  # a gap: resume soon after audio comes, and keep more from now
                self._playing = False
                self._playing_since = None
                self.underruns += 1
                # Resume with one step of margin rather than a whole prefill: one short gap,
                # not a long one, nor a train of them.
                self._resume_at = self._frame_len + int(self.GAP_STEP_S * self.rate)
                self._gap_floor = min(max(self._gap_floor, self.goal) + int(self.GAP_STEP_S * self.rate),
                                      self.prefill + int(self.MAX_EXTRA_S * self.rate))
                self._clean = 0
                return AudioBlock(None, np.zeros(length, np.int16))
            self._clean += length
            if self._clean >= self.RELAX_S * self.rate:
                self._clean = 0
                self._gap_floor = max(0, self._gap_floor - int(self.GAP_STEP_S * self.rate / 4))
            self._regulate(length)
            if self._stretch_debt > 0 and self._chunk_offset == 0 and self._quiet(self._chunks[0]):
                pad = min(length, self._stretch_debt)
                self._stretch_debt -= pad
                self.stretched_samples += pad
                return AudioBlock(None, np.zeros(pad, np.int16))
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

    def _quiet(self, chunk: tuple[int, np.ndarray, bool]) -> bool:
        _, samples, speaking = chunk
        return not speaking and bool(np.abs(samples).max(initial=0) < self.QUIET_PEAK)

    def _update_goal(self) -> None:
        jitter = 0
        if len(self._arrivals) >= 10:
            lateness = np.array([t - pos / self.rate for t, pos in self._arrivals])
            spread = float(np.percentile(lateness, 99) - lateness.min())
            jitter = int((spread + self.JITTER_MARGIN_S) * self.rate)
        self.goal = min(
            max(self.prefill - self._frame_len, jitter, self._gap_floor),
            self.prefill + int(self.MAX_EXTRA_S * self.rate),
        )

    def _regulate(self, block: int) -> None:
        """Once a window: compare the queue's low water with the goal, and owe silence (below)
        or skipped frames (above); debts are paid at quiet frame starts."""
        self._low_water = self._pending if self._low_water is None else min(self._low_water, self._pending)
        self._window += block
        if self._window >= self.WINDOW_S * self.rate:
            self._update_goal()
            slack = self.SLACK_S * self.rate
            self._trim_debt = self._stretch_debt = 0
            if self._low_water > self.goal + slack:
                self._trim_debt = self._low_water - self.goal
            elif self._low_water < self.goal - slack:
                self._stretch_debt = self.goal - self._low_water
            self._low_water, self._window = None, 0
        force = self._trim_debt > self.FORCE_TRIM_S * self.rate
        cut = 0
        while self._trim_debt > 0 and self._chunk_offset == 0 and len(self._chunks) > 1:
            samples = self._chunks[0][1]
            if len(samples) > self._trim_debt:
                break
            if not self._quiet(self._chunks[0]):
                if not force:
                    break  # wait for a quiet frame between turns
                cut += len(samples)
            self._chunks.popleft()
            self._pending -= len(samples)
            self._trim_debt -= len(samples)
            self.trimmed_samples += len(samples)
        if cut:
            self.speech_cut_samples += cut
            self.speech_cuts += 1

    def written(self, block: AudioBlock, when: float, latency_s: float) -> None:
        """The writer handed `block` to the device at `when`; the device then held `latency_s`."""
        with self._lock:
            self._written.append(_Written(self._stream_end, len(block.samples), block.pos))
            self._audio_log.append((self._stream_end, block.samples))
            self._stream_end += len(block.samples)
            self._last_write = (when, self._stream_end, latency_s)
            if block.pos is not None:
                self._last_pos = block.pos + len(block.samples)
            else:
                self.speaking = False
            keep = self._stream_end - int(self.HISTORY_S * self.rate)
            while self._written and self._written[0].stream_pos + self._written[0].length < keep:
                self._written.popleft()
            while self._audio_log and self._audio_log[0][0] < keep:
                self._audio_log.popleft()

    def recent_audio(self, seconds: float, settled_s: float) -> tuple[np.ndarray, float] | None:
        """The last `seconds` of audio written that the device's own figures say was heard at
        least `settled_s` ago, and when (by those figures alone) its first sample was heard."""
        with self._lock:
            if self._last_write is None:
                return None
            t, end, latency = self._last_write
            heard_until = end - int((latency + settled_s) * self.rate)
            blocks = [(pos, samples) for pos, samples in self._audio_log if pos + len(samples) <= heard_until]
            length = int(seconds * self.rate)
            if not blocks or sum(len(b) for _, b in blocks) < length:
                return None
            audio = np.concatenate([b for _, b in blocks])[-length:]
            first = blocks[-1][0] + len(blocks[-1][1]) - length
            return audio, t + latency - (end - first) / self.rate

    # ------------------------------------------------------------------ clock

    def _stream_pos_at(self, when: float) -> float | None:
        if self._last_write is None:
            return None
        t, end, latency = self._last_write
        return end - (latency + self.latency_correction) * self.rate + (when - t) * self.rate

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
                    return t + latency + self.latency_correction - (end - stream_pos) / self.rate
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
            if chosen is None and self._barge_in and self._pictures:
                chosen = self._pictures[-1]  # the newest, at once (see drop_pending)
                self._pictures.clear()
            if chosen is not None and chosen[1] is not None:
                self._shown = (chosen[0], chosen[1])
                return chosen[0], chosen[1]
            held = self._shown[1] if self._shown is not None else self.idle_picture
            return None, held


def monotonic() -> float:
    """The one wall clock every part of the virtual camera uses."""
    return time.monotonic()
