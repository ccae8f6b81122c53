"""From a renderer to the room: frames into the publisher, turn progress out, interrupts in between.

The playback position reported for a turn is what was actually published: the renderer's
count of delivered speech, less the speech an interrupt discarded from the synchronizer's
queues and the speech frames still on their way from the renderer when the interrupt
came (those are shown as the last idle picture with silence, so the face stops talking
within a frame of the interrupt, not when the renderer catches up).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from .frames import RenderedFrame, Renderer, TurnFinished, TurnStarted
from .publisher import TrackPublisher

log = logging.getLogger(__name__)

OnStarted = Callable[[str], None]
OnFinished = Callable[[str, float, bool], None]


class Playout:
    def __init__(
        self, renderer: Renderer, publisher: TrackPublisher, *, on_started: OnStarted, on_finished: OnFinished
    ) -> None:
        self.renderer = renderer
        self.publisher = publisher
        self._on_started = on_started
        self._on_finished = on_finished
        self._playing: str | None = None  # the turn whose frames are being published
        self._hiding = False  # an interrupt came: speech frames still arriving are not shown
        self._hidden_s: dict[str, float] = {}
        self._idle_image: np.ndarray | None = None
        self._silence = np.zeros(0, np.int16)
        self.first_frame = asyncio.Event()  # a real frame has been captured on published tracks
        #: loop time of the latest frame pushed, and of the latest one showing speech
        self.last_frame_at = 0.0
        self.frames = 0

    @property
    def playing(self) -> str | None:
        return self._playing

    async def run(self) -> None:
        """Publish until the renderer ends (or this task is cancelled)."""
        async for item in self.renderer.items():
            if isinstance(item, RenderedFrame):
                await self._frame(item)
            elif isinstance(item, TurnStarted):
                self._playing = item.turn_id
                self._hiding = False
                self._on_started(item.turn_id)
            elif isinstance(item, TurnFinished):
                self._finished(item)

    def clear(self) -> None:
        """Interrupt: stop the face and the voice now; the renderer drops queued speech."""
        self.renderer.interrupt()
        if self._playing is not None:
            self._hiding = True
            discarded = self.publisher.clear()
            self._hidden_s[self._playing] = self._hidden_s.get(self._playing, 0.0) + discarded
            if self._idle_image is not None:  # the face at rest now, not at the next frame
                self.publisher.show_now(self._idle_image)

    async def _frame(self, frame: RenderedFrame) -> None:
        if not frame.speaking:
            self._idle_image = frame.image
            self._hiding = False
        elif self._hiding and self._playing is not None and self._idle_image is not None:
            rate = self.publisher.format.sample_rate
            self._hidden_s[self._playing] = self._hidden_s.get(self._playing, 0.0) + len(frame.audio) / rate
            if len(self._silence) != len(frame.audio):
                self._silence = np.zeros(len(frame.audio), np.int16)
            frame = RenderedFrame(self._idle_image, self._silence, speaking=False)
        if not self.publisher.published:
            return  # idle frames rendered while the tracks are being published
        await self.publisher.push(frame)
        self.frames += 1
        self.last_frame_at = time.monotonic()
        self.first_frame.set()

    def _finished(self, item: TurnFinished) -> None:
        hidden = self._hidden_s.pop(item.turn_id, 0.0)
        if self._playing == item.turn_id:
            self._playing = None
            self._hiding = False
        position = max(0.0, item.played_s - hidden)
        self._on_finished(item.turn_id, round(position, 4), item.interrupted)
