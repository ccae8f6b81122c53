"""A renderer published into a room: the publishing task, the tracks, and their teardown on every path."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .errors import AvatarLiveKitError
from .frames import Renderer
from .playout import OnFinished, OnStarted, Playout
from .publisher import TrackPublisher

log = logging.getLogger(__name__)

#: How long start() waits for the first picture (preparing a photo takes a second or two).
FIRST_FRAME_TIMEOUT_S = 30.0


def _ignore_started(turn_id: str) -> None:
    pass


def _ignore_finished(turn_id: str, position_s: float, interrupted: bool) -> None:
    pass


class RoomAvatar:
    def __init__(self, renderer: Renderer, *, publish_audio: bool = True) -> None:
        self.renderer = renderer
        self.publisher = TrackPublisher(renderer.format, publish_audio=publish_audio)
        self.on_started: OnStarted = _ignore_started
        self.on_finished: OnFinished = _ignore_finished
        self.playout = Playout(
            renderer, self.publisher,
            on_started=lambda turn: self.on_started(turn),
            on_finished=lambda turn, position, interrupted: self.on_finished(turn, position, interrupted),
        )
        self._task: asyncio.Task[None] | None = None
        self._teardown: asyncio.Future[None] | None = None
        #: Set when publishing stopped on its own (the renderer ended or failed).
        self.stopped = asyncio.Event()

    async def start(self, room: Any, first_frame_timeout: float = FIRST_FRAME_TIMEOUT_S) -> None:
        """Start rendering, publish the tracks, and return once a real frame is on them."""
        self._task = asyncio.create_task(self._run(), name="avatar-playout")
        await self.publisher.publish(room)
        first = asyncio.ensure_future(self.playout.first_frame.wait())
        try:
            await asyncio.wait({first, self._task}, timeout=first_frame_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            first.cancel()
        if not self.playout.first_frame.is_set():
            if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
                raise AvatarLiveKitError(f"the avatar stopped before its first frame: {self._task.exception()}")
            raise AvatarLiveKitError(
                f"no avatar frame within {first_frame_timeout:g} s; is the machine overloaded or the node unreachable?"
            )

    async def attach(self, room: Any) -> None:
        """Publish the same tracks in a room joined again (after a reconnect)."""
        await self.publisher.publish(room)

    def clear(self) -> None:
        self.playout.clear()

    async def _run(self) -> None:
        try:
            await self.playout.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("avatar publishing stopped")
            raise
        finally:
            self.stopped.set()

    async def aclose(self) -> None:
        """Stop publishing and return every resource. Idempotent; the teardown finishes even if the "
          "caller is cancelled."""
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._close())
        await asyncio.shield(self._teardown)

    async def _close(self) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        finally:
            try:
                await self.publisher.aclose()
            finally:
                await self.renderer.aclose()
