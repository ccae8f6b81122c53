"""The avatar worker's core: in a room, give the agent's speech a face rendered elsewhere.

    worker = AvatarWorker(renderer, agent_identity="agent-xyz")
    await worker.start(room)          # publishes idle video at once, listens for the agent
    ...                               # worker.attach(new_room) after a reconnect
    await worker.aclose()

The renderer is normally a `FeedRenderer` on an avatar node over gRPC; the room is a
connected `rtc.Room` (or anything shaped like one). The agent reaches the worker with
LiveKit's data-stream avatar protocol (see `agent_link.py`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .agent_link import IDLE_TIMEOUT_S, AgentAudioLink
from .frames import Renderer
from .room_avatar import FIRST_FRAME_TIMEOUT_S, RoomAvatar

log = logging.getLogger(__name__)


class AvatarWorker:
    def __init__(self, renderer: Renderer, *, agent_identity: str, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.renderer = renderer
        self.avatar = RoomAvatar(renderer)
        self.link = AgentAudioLink(
            agent_identity,
            push_speech=renderer.push_speech,
            end_turn=renderer.end_turn,
            clear=self.avatar.clear,
            idle_timeout_s=idle_timeout_s,
        )
        self.avatar.on_started = self.link.turn_started
        self.avatar.on_finished = self.link.turn_finished
        self._teardown: asyncio.Future[None] | None = None

    @property
    def agent_identity(self) -> str:
        return self.link.agent_identity

    async def start(self, room: Any, first_frame_timeout: float = FIRST_FRAME_TIMEOUT_S) -> None:
        """Publish (idle video from the first frame), then answer the agent."""
        try:
            await self.avatar.start(room, first_frame_timeout)
            self.link.attach(room)
        except BaseException:
            await self.aclose()
            raise

    async def attach(self, room: Any) -> None:
        """Carry on in a room joined again: same tracks, same renderer, same turns."""
        self.link.detach()
        await self.avatar.attach(room)
        self.link.attach(room)

    async def wait_stopped(self) -> None:
        """Returns if publishing stops on its own (the renderer ended or failed)."""
        await self.avatar.stopped.wait()

    async def aclose(self) -> None:
        """Leave nothing behind: the node session, the tracks, the handlers. Idempotent; finishes if cancelled."""
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._close())
        await asyncio.shield(self._teardown)

    async def _close(self) -> None:
        try:
            await self.link.aclose()
        finally:
            await self.avatar.aclose()
