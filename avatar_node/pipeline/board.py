"""Frames cut from the speech queue and not yet delivered: what the renderer and the pacer share.

The renderer cuts frames (their speech is then fixed) and later attaches pictures;
the deliverer takes them in index order. Discarding frames ahead (barge-in, or new
speech replacing idle frames) bumps the epoch, so a step still rendering for the old
epoch is thrown away when it returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from .speech import FrameSpeech


@dataclass(eq=False)
class CutFrame:
    index: int
    epoch: int
    speech: FrameSpeech
    image: np.ndarray | None = None  # attached once rendered
    skipped: bool = False  # never rendered (the stream was late): delivered as a repeat

    @property
    def ready(self) -> bool:
        return self.image is not None or self.skipped


class FrameBoard:
    def __init__(self) -> None:
        self.frames: dict[int, CutFrame] = {}
        self.epoch = 0
        self.next_cut = 0  # the renderer's next frame
        self.next_send = 0  # the next frame to deliver; everything before it is committed
        self.rendering_epoch: int | None = None  # epoch of the step in flight, if any
        self.renderer_done = False
        self._cut = Signal()  # frames were cut, rendered or discarded
        self._rewound = Signal()  # frames were discarded
        self._room = Signal(sticky=True)  # a frame was delivered or input arrived: the renderer may go on

    def add(self, frames: list[CutFrame]) -> None:
        for frame in frames:
            self.frames[frame.index] = frame
        if frames:
            self.next_cut = frames[-1].index + 1
        self.changed()

    def take(self, index: int) -> CutFrame:
        """Commit frame `index` for delivery."""
        frame = self.frames.pop(index)
        self.next_send = index + 1
        self.wake_renderer()
        return frame

    def rewind(self) -> list[CutFrame]:
        """Discard every frame not yet committed; rendering resumes at `next_send`."""
        dropped = [self.frames.pop(k) for k in sorted(self.frames)]
        self.epoch += 1
        self.next_cut = self.next_send
        self.changed()
        self._rewound.notify()
        self.wake_renderer()
        return dropped

    def speech_ahead(self) -> bool:
        """Whether any frame cut ahead of delivery carries speech (those are never discarded
        for new speech: their audio has left the queue)."""
        return any(f.speech.turn is not None for f in self.frames.values())

    # -- wake-ups -------------------------------------------------------------------

    def changed(self) -> None:
        self._cut.notify()

    def wake_renderer(self) -> None:
        self._room.notify()

    async def wait_changed(self, timeout: float | None = None) -> None:
        await self._cut.wait(timeout)

    async def wait_rewound(self, timeout: float) -> None:
        await self._rewound.wait(timeout)

    async def wait_for_renderer_wake(self, timeout: float | None = None) -> None:
        await self._room.wait(timeout)


class Signal:
    """Wakes whoever waits, with an optional timeout, and costs no task per wait (this runs
    several times per frame). A sticky signal also remembers a notification nobody waited for,
    so the next wait returns at once."""

    def __init__(self, sticky: bool = False) -> None:
        self._waiters: list[asyncio.Future[None]] = []
        self._sticky = sticky
        self._pending = False

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._sticky and not waiters:
            self._pending = True

    async def wait(self, timeout: float | None = None) -> None:
        if self._pending:
            self._pending = False
            return
        if timeout is not None and timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
