"""Staying in a room: join, rejoin after a drop (with a fresh token when one can be minted), and
notice when there is no reason to stay (removed, the room deleted, the agent gone for good).

LiveKit's SDK resumes short network drops by itself; this covers the rest. The avatar keeps
rendering while the room is rejoined, and the same tracks are published again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from livekit import rtc

from .errors import AvatarLiveKitError

log = logging.getLogger(__name__)

REJOIN_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Reasons a participant is out of the room for good.
FINAL_DISCONNECTS = {
    rtc.DisconnectReason.PARTICIPANT_REMOVED,
    rtc.DisconnectReason.ROOM_DELETED,
    rtc.DisconnectReason.CLIENT_INITIATED,
    rtc.DisconnectReason.DUPLICATE_IDENTITY,
}


async def join_room(url: str, token: str, *, auto_subscribe: bool = False) -> rtc.Room:
    room = rtc.Room()
    try:
        await room.connect(url, token, rtc.RoomOptions(auto_subscribe=auto_subscribe))
    except Exception as exc:
        raise AvatarLiveKitError(f"cannot join the LiveKit room at {url}: {exc}") from None
    return room


class RoomSession:
    """Keeps one participant in a room for as long as `run()` runs."""

    def __init__(
        self,
        url: str,
        token: Callable[[], str],
        *,
        on_joined: Callable[[rtc.Room, bool], Awaitable[None]],
        watch_identity: str = "",
        gone_after_s: float = 60.0,
        auto_subscribe: bool = False,
    ) -> None:
        self.url = url
        self._token = token
        self._on_joined = on_joined  # (room, first time?)
        self._watch = watch_identity
        self._gone_after_s = gone_after_s
        self._auto_subscribe = auto_subscribe
        self.room: rtc.Room | None = None
        self.joins = 0

    async def run(self) -> str:
        """Until there is no reason to stay; returns why."""
        attempt = 0
        while True:
            try:
                room = await join_room(self.url, self._token(), auto_subscribe=self._auto_subscribe)
            except AvatarLiveKitError as exc:
                if self.joins == 0:
                    raise
                delay = REJOIN_DELAYS_S[min(attempt, len(REJOIN_DELAYS_S) - 1)]
                log.warning("%s; trying again in %g s", exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.room = room
            self.joins += 1
            try:
                await self._on_joined(room, self.joins == 1)
                reason = await self._stay(room)
            finally:
                if room.isconnected():
                    await room.disconnect()
            if reason is not None:
                return reason
            log.warning("dropped from room %s; joining again", room.name)

    async def _stay(self, room: rtc.Room) -> str | None:
        """Wait in the room; None when it dropped and is worth joining again."""
        disconnected: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_disconnected(reason: int = 0) -> None:
            if not disconnected.done():
                disconnected.set_result(reason)

        room.on("disconnected", on_disconnected)
        try:
            while True:
                try:
                    async with asyncio.timeout(1.0):
                        reason = await asyncio.shield(disconnected)
                except TimeoutError:
                    if self._watch and self._watched_gone(room):
                        return f"{self._watch} left the room"
                    continue
                if reason in FINAL_DISCONNECTS:
                    return f"disconnected ({rtc.DisconnectReason.Name(reason)})"  # type: ignore[arg-type]
                return None
        finally:
            room.off("disconnected", on_disconnected)

    _gone_since: float | None = None

    def _watched_gone(self, room: rtc.Room) -> bool:
        now = asyncio.get_running_loop().time()
        if self._watch in room.remote_participants:
            self._gone_since = None
            return False
        if self._gone_since is None:
            self._gone_since = now
        return now - self._gone_since > self._gone_after_s
