"""The avatar's frames as two WebRTC tracks (video and audio) on the stream's one media clock.

One pump hands every `AVFrame` to both tracks at the same moment. Both stamp what they
emit with the frame's own `pts` in the same time base (1 / clock rate), so the two RTP
streams are sent side by side and their timestamps describe the same media timeline: the
browser's lip-sync (RTCP sender reports) has nothing to correct.

The audio track's sample position always equals the pts: a frame the pipeline dropped
(a slow consumer) leaves a hole that is filled with silence, never closed up, so audio
cannot slide ahead of the picture. Video may skip frames (the next picture simply has a
later timestamp); when the encoder cannot keep up, the oldest waiting picture is dropped
and counted, so latency stays bounded.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from avatar_node.pipeline import AVFrame

T = TypeVar("T")

#: Pictures that may wait for the video encoder before the oldest is dropped.
VIDEO_QUEUE_FRAMES = 2
#: Audio that may wait for its encoder (it is cheap: this only bounds a stalled sender).
AUDIO_QUEUE_FRAMES = 25
#: A hole in the audio longer than this is not filled (the stream restarted its clock).
MAX_AUDIO_GAP_S = 2.0
#: Audio is handed to the encoder in pieces of at most one Opus packet (20 ms): the sender
#: stamps every packet an encode call returns with one timestamp, so two packets from one
#: call would collide (the second is discarded by the receiver as a duplicate).
AUDIO_PIECE_S = 0.020


class _LatestQueue(Generic[T]):
    """A bounded queue that drops its oldest item when full (live media: newest wins)."""

    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        if self._closed:
            return
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            if self._closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


@dataclass
class SentClock:
    """When each track handed a frame's media to its encoder: the node's side of A/V sync."""

    video_pts: int | None = None
    audio_pts: int | None = None  # the end of the last audio handed over
    video_wait_ms: float = 0.0  # how long the last picture waited for the encoder
    audio_wait_ms: float = 0.0
    video_times: dict[int, float] = field(default_factory=dict)  # pts -> monotonic time, recent frames
    audio_times: dict[int, float] = field(default_factory=dict)

    def mark(self, times: dict[int, float], pts: int) -> None:
        times[pts] = time.monotonic()
        if len(times) > 50:
            del times[next(iter(times))]

    def av_offset_ms(self) -> float | None:
        """Mean of (audio handed over - picture handed over) for recent frames both tracks sent:
        positive when the audio leaves after its picture."""
        common = self.video_times.keys() & self.audio_times.keys()
        if not common:
            return None
        return sum(self.audio_times[p] - self.video_times[p] for p in common) * 1000 / len(common)


class AvatarVideoTrack(MediaStreamTrack):
    """RGB pictures of the avatar, stamped with their frame pts."""

    kind = "video"

    def __init__(self, clock_rate: int, sent: SentClock) -> None:
        super().__init__()
        self._time_base = fractions.Fraction(1, clock_rate)
        self._queue: _LatestQueue[tuple[AVFrame, float]] = _LatestQueue(VIDEO_QUEUE_FRAMES)
        self._sent = sent
        self.started = False  # the sender has asked for a frame (the peer is connected)
        self.frames = 0

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def put(self, frame: AVFrame) -> None:
        if self.started and frame.image is not None:
            self._queue.put((frame, time.monotonic()))

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.started = True
        frame, queued_at = await self._queue.get()
        assert frame.image is not None
        picture = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        picture.pts = frame.pts
        picture.time_base = self._time_base
        self.frames += 1
        self._sent.video_pts = frame.pts
        self._sent.mark(self._sent.video_times, frame.pts)
        self._sent.video_wait_ms = (time.monotonic() - queued_at) * 1000
        return picture

    def stop(self) -> None:
        self._queue.close()
        super().stop()


class AvatarAudioTrack(MediaStreamTrack):
    """The speech audio of each frame, exactly its slice, stamped with the frame's pts."""

    kind = "audio"

    def __init__(self, clock_rate: int, sent: SentClock) -> None:
        super().__init__()
        self._rate = clock_rate
        self._time_base = fractions.Fraction(1, clock_rate)
        self._queue: _LatestQueue[tuple[AVFrame, float]] = _LatestQueue(AUDIO_QUEUE_FRAMES)
        self._sent = sent
        self._next_pts: int | None = None  # where the audio handed over so far ends
        self._pending: deque[av.AudioFrame] = deque()
        self.started = False
        self.silence_filled_samples = 0

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def put(self, frame: AVFrame) -> None:
        if self.started:
            self._queue.put((frame, time.monotonic()))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.started = True
        if not self._pending:
            frame, queued_at = await self._queue.get()
            self._sent.audio_wait_ms = (time.monotonic() - queued_at) * 1000
            self._pending.extend(self._frames_for(frame))
            self._sent.mark(self._sent.audio_times, frame.pts)
        return self._pending.popleft()

    def _frames_for(self, frame: AVFrame) -> list[av.AudioFrame]:
        """The frame's audio at its pts, after silence for any hole before it, in 20 ms pieces."""
        out = []
        gap = 0 if self._next_pts is None else frame.pts - self._next_pts
        if 0 < gap <= MAX_AUDIO_GAP_S * self._rate:
            assert self._next_pts is not None
            out += self._pieces(np.zeros(gap, np.int16), self._next_pts)
            self.silence_filled_samples += gap
        out += self._pieces(frame.audio, frame.pts)
        self._next_pts = frame.pts + frame.audio.size
        self._sent.audio_pts = self._next_pts
        return out

    def _pieces(self, samples: np.ndarray, pts: int) -> list[av.AudioFrame]:
        step = max(1, int(self._rate * AUDIO_PIECE_S))
        samples = np.ascontiguousarray(samples, dtype=np.int16)
        out = []
        for start in range(0, samples.size, step):
            piece = av.AudioFrame.from_ndarray(samples[start:start + step].reshape(1, -1), format="s16", layout="mono")
            piece.sample_rate = self._rate
            piece.pts = pts + start
            piece.time_base = self._time_base
            out.append(piece)
        return out

    def stop(self) -> None:
        self._queue.close()
        super().stop()
