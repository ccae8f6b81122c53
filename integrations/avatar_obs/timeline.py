"""The stream's frames: the SDK's live feed, with OBS's own still frames while the node is away.

A live stream must never stop: OBS and RTMP services treat a pause as the end. The feed keeps
one unbroken timeline across node sessions, outages and reconnections, and joins a session at
its keyframe so the H.264 stays decodable. Its idle frames are replaced here by a cheap still
stream (the last picture re-encoded with the node's settings) instead of a keyframe per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from avatar_client import AvatarError, FeedFrame, FeedNotice, FeedStatus, FeedTurn, LiveFeed
from avatar_client.feed_items import FeedFormat
from avatar_client.live_feed import PERMANENT, FeedUnavailable

from .errors import NodeUnavailable
from .feed import LinkOpener
from .idle import IdleFrames
from .publisher import StreamFrame

log = logging.getLogger(__name__)

#: Node errors that retrying cannot fix: the command stops and says why.
FATAL_CODES = PERMANENT


@dataclass
class TimelineStats:
    node_frames: int = 0
    idle_frames: int = 0
    sessions: int = 0  # node sessions opened
    outages: int = 0  # times the stream fell back to still frames after node frames
    connected: bool = False
    last_error: str = ""


class LiveTimeline:
    """Frames for the publisher, paced at 1x, from whatever source is available.

    `frames()` yields `StreamFrame`s until cancelled (a refusal no retry fixes raises its
    `AvatarError`). Controls (`say`, `interrupt`...) go to the current session and raise
    `NodeUnavailable` when there is none.
    """

    def __init__(
        self,
        open_link: LinkOpener,
        fmt: FeedFormat,
        idle: IdleFrames,
        *,
        stall_s: float = 1.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 10.0,
        describe_node: str = "the node",
        on_turn: Callable[[FeedTurn], None] | None = None,
        on_notice: Callable[[FeedNotice], None] | None = None,
    ) -> None:
        self.format = fmt
        self.stats = TimelineStats()
        self.connected_event = asyncio.Event()
        self._idle = idle
        self._stall_s = stall_s
        self._describe_node = describe_node
        self._on_turn = on_turn
        self._on_notice = on_notice
        # Started here so controls work as soon as a session is up; its frames flow once read.
        self._feed = LiveFeed.from_opener(
            open_link, fmt, describe=describe_node, idle_after_s=stall_s, stall_s=max(3.0, 3 * stall_s),
            retry_min_s=retry_min_s, retry_max_s=retry_max_s,
        )

    # ------------------------------------------------------------------ controls

    async def say(self, text: str) -> None:
        await self._control(lambda feed: feed.say(text))

    async def send_audio(self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool = False) -> None:
        await self._control(lambda feed: feed.send_audio(pcm, sample_rate, end_of_turn))

    async def end_turn(self) -> None:
        await self._control(lambda feed: feed.end_turn())

    async def interrupt(self) -> None:
        await self._control(lambda feed: feed.interrupt())

    async def behaviour(self, name: str) -> None:
        await self._control(lambda feed: feed.behaviour(name))

    async def _control(self, send: Callable[[LiveFeed], Awaitable[None]]) -> None:
        try:
            await send(self._feed)
        except FeedUnavailable:
            raise NodeUnavailable(
                f"{self._describe_node} is not reachable right now; the stream shows a still picture "
                "and reconnects by itself"
            ) from None
        except AvatarError as error:
            raise NodeUnavailable(f"{self._describe_node} did not take it: {error}") from None

    # ------------------------------------------------------------------ frames

    async def frames(self) -> AsyncIterator[StreamFrame]:
        holding = False  # a run of still frames is being made
        node_seen = False
        try:
            async for item in self._feed:
                if isinstance(item, FeedFrame):
                    if item.idle:
                        if not holding:
                            holding = True
                            if node_seen:
                                self.stats.outages += 1
                                log.warning("no frames from %s for %.1f s; showing a still picture until it is back",
                                            self._describe_node, self._stall_s)
                            self._idle.hold(item.access_unit)  # the last keyframe seen, if any
                        encoded, keyframe, _ = self._idle.next()
                        self.stats.idle_frames += 1
                        yield StreamFrame(item.index, encoded, keyframe, item.audio, idle=True)
                    else:
                        assert item.access_unit is not None, "the stream's feed is H.264"
                        holding = False
                        node_seen = True
                        self.stats.node_frames += 1
                        yield StreamFrame(item.index, item.access_unit, item.keyframe, item.audio)
                elif isinstance(item, FeedStatus):
                    self._status(item)
                elif isinstance(item, FeedTurn):
                    if self._on_turn is not None:
                        self._on_turn(item)
                elif isinstance(item, FeedNotice):
                    if self._on_notice is not None:
                        self._on_notice(item)
        finally:
            await self._feed.aclose()
            self._idle.close()

    def _status(self, status: FeedStatus) -> None:
        self.stats.connected = status.connected
        if status.connected:
            self.stats.sessions += 1
            self.connected_event.set()
            if self.stats.last_error:
                log.warning("%s is back; the avatar is live again", self._describe_node)
            self.stats.last_error = ""
            return
        self.connected_event.clear()
        if status.detail != self.stats.last_error:
            log.warning("%s; retrying in %g s (the stream shows a still picture meanwhile)", status.detail,
                        status.retry_in_s)
        self.stats.last_error = status.detail
