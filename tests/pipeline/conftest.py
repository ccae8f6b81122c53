"""In-process pipeline fixtures: runtimes with the test-card or portrait engine, and helpers to drain a stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from avatar_node.pipeline import AVFrame, AvatarStream, Ended, Notice, Stats, StreamItem, TurnEvent

from ..support.media import tone as tone  # the pipeline tests import it from here


@dataclass
class Received:
    items: list[StreamItem] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # loop time each frame was taken

    @property
    def frames(self) -> list[AVFrame]:
        return [i for i in self.items if isinstance(i, AVFrame)]

    @property
    def turns(self) -> list[TurnEvent]:
        return [i for i in self.items if isinstance(i, TurnEvent)]

    @property
    def notices(self) -> list[Notice]:
        return [i for i in self.items if isinstance(i, Notice)]

    @property
    def stats(self) -> Stats:
        return [i for i in self.items if isinstance(i, Stats)][-1]

    @property
    def ended(self) -> Ended | None:
        ended = [i for i in self.items if isinstance(i, Ended)]
        return ended[0] if ended else None

    def audio(self) -> np.ndarray:
        return np.concatenate([f.audio for f in self.frames]) if self.frames else np.zeros(0, np.int16)


async def collect(stream: AvatarStream, into: Received | None = None, timeout: float = 60.0) -> Received:
    """Read a stream to its end."""
    received = into or Received()
    loop = asyncio.get_running_loop()

    async def read() -> None:
        async for item in stream:
            received.items.append(item)
            if isinstance(item, AVFrame):
                received.arrivals.append(loop.time())

    await asyncio.wait_for(read(), timeout)
    return received


def check_one_clock(frames: list[AVFrame], rate: int = 48000, fps: float = 25.0) -> None:
    """Consecutive frames, each with exactly its own slice of audio at the same pts."""
    first = frames[0].index
    for k, frame in enumerate(frames):
        assert frame.index == first + k, "frames went missing"
        assert frame.pts == round(frame.index * rate / fps)
        assert len(frame.audio) == frame.duration == round((frame.index + 1) * rate / fps) - frame.pts
