"""Where the avatar's frames come from: a node through the SDK (reconnecting on its own), or a
built-in sync test pattern. The rest of the virtual camera sees only `FrameSource`, so another
producer (an in-process pipeline) can stand in for the node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np

from ..errors import AvatarError
from ..feed_items import FeedFrame, FeedHealth, FeedNotice, FeedTurn
from ..live_feed import PERMANENT, FeedUnavailable, LiveFeed, SessionSpec, retry_delay
from .errors import CamError
from .playout import monotonic


@dataclass(frozen=True)
class SourceFrame:
    """One frame on the source's continuous timeline, with exactly its own speech audio."""

    pos: int  # media position of the frame's first audio sample, in clock-rate samples
    image: np.ndarray = field(repr=False)  # HxWx3 uint8 RGB
    audio: np.ndarray = field(repr=False)  # int16 mono at the clock rate
    speaking: bool


@dataclass(frozen=True)
class Connected:
    description: str
    clock_rate: int
    fps: float


@dataclass(frozen=True)
class Disconnected:
    reason: str
    retry_in_s: float
    attempt: int


@dataclass(frozen=True)
class TurnStarted:
    turn_id: str
    pos: int


@dataclass(frozen=True)
class TurnFinished:
    turn_id: str
    pos: int  # where the turn's audio ended
    interrupted: bool
    played_ms: int


@dataclass(frozen=True)
class SourceHealth:
    """The node's own counters for this session."""

    speech_underruns: int  # speech arrived late; the node inserted a silent frame
    frames_dropped: int  # this client read too slowly; the node skipped frames


SourceItem = SourceFrame | Connected | Disconnected | TurnStarted | TurnFinished | SourceHealth | FeedNotice


class NotConnected(Exception):
    """Speech or a control was sent while the source has no session (the node is unreachable)."""


class FrameSource(Protocol):
    """A producer of avatar frames in live pacing (1x), and the controls that drive it."""

    clock_rate: int

    def items(self) -> AsyncIterator[SourceItem]: ...

    async def say(self, text: str, turn_id: str = "") -> None: ...

    async def send_speech(
        self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool, turn_id: str = ""
    ) -> None: ...

    async def interrupt(self) -> None: ...

    async def behaviour(self, name: str) -> None: ...


class NodeSource:
    """A live session on an avatar node through the SDK's `LiveFeed`.

    The feed reconnects with back-off, drops a session that sends no frame for `stall_s` seconds
    and keeps one timeline, so positions never go backwards. This adds the first connection (the
    camera may start before its node) and skips the feed's idle frames: the camera's playout holds
    the last picture itself.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        image: bytes | None = None,
        avatar_id: str = "",
        engine: str = "",
        voice: str = "",
        width: int = 848,
        height: int = 480,
        fps: float = 0.0,
        stall_s: float = 3.0,
        connect_timeout_s: float = 15.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if (image is None) == (not avatar_id):
            raise ValueError("pass exactly one of image= or avatar_id=")
        self.target = target
        self._token = token
        self._credentials = credentials
        self._spec = SessionSpec(
            photo=image, avatar_id=avatar_id, engine=engine, voice=voice, width=width, height=height, fps=fps
        )
        self._stall_s = stall_s
        self._connect_timeout_s = connect_timeout_s
        self.clock_rate = 48_000
        self._feed: LiveFeed | None = None

    async def items(self) -> AsyncIterator[SourceItem]:
        attempt = 0
        while self._feed is None:
            try:
                # Frames late by less than a stall are the node's own; idle frames start at a stall.
                self._feed = await LiveFeed.open_node(
                    self.target, self._token, self._credentials, self._spec, stall_s=self._stall_s,
                    idle_after_s=self._stall_s, connect_timeout_s=self._connect_timeout_s,
                )
            except TimeoutError:
                reason = f"no answer from {self.target} within {self._connect_timeout_s:g} s"
            except AvatarError as error:
                if error.code in PERMANENT:
                    raise CamError(f"the node refused the session: {error}") from None
                reason = str(error)
            else:
                break
            attempt += 1
            yield Disconnected(reason, retry_delay(attempt), attempt)
            await asyncio.sleep(retry_delay(attempt))
        feed = self._feed
        try:
            async for item in feed:
                if isinstance(item, FeedFrame):
                    if not item.idle and item.picture is not None:
                        yield SourceFrame(item.pts, item.picture, item.audio, item.speaking)
                elif isinstance(item, FeedTurn):
                    if item.kind == "started":
                        yield TurnStarted(item.turn_id, item.pts)
                    else:
                        yield TurnFinished(item.turn_id, item.pts, item.interrupted, item.played_ms)
                elif isinstance(item, FeedHealth):
                    yield SourceHealth(item.speech_underruns, item.frames_dropped)
                elif isinstance(item, FeedNotice):
                    yield item
                elif item.connected:
                    self.clock_rate = feed.format.clock_rate
                    yield Connected(item.detail, feed.format.clock_rate, feed.format.fps)
                else:
                    yield Disconnected(item.detail, item.retry_in_s, item.attempt)
        except AvatarError as error:
            raise CamError(f"the node refused the session: {error}") from None
        finally:
            self._feed = None
            await feed.aclose()

    async def _control(self, send: Callable[[LiveFeed], Awaitable[None]]) -> None:
        try:
            if self._feed is None:
                raise FeedUnavailable("no session yet")
            await send(self._feed)
        except FeedUnavailable:
            raise NotConnected(f"not connected to the node at {self.target}") from None

    async def say(self, text: str, turn_id: str = "") -> None:
        await self._control(lambda feed: feed.say(text, turn_id=turn_id))

    async def send_speech(
        self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool, turn_id: str = ""
    ) -> None:
        await self._control(lambda feed: feed.send_audio(pcm, sample_rate, end_of_turn=end_of_turn, turn_id=turn_id))

    async def interrupt(self) -> None:
        await self._control(lambda feed: feed.interrupt())

    async def behaviour(self, name: str) -> None:
        await self._control(lambda feed: feed.behaviour(name))


class SyncTestSource:
    """A calibration pattern: a white frame with a 1 kHz beep once a second, a moving bar
    otherwise. Watch it in the meeting app and tune --av-offset-ms until flash and beep meet."""

    BEEP_HZ = 1000.0

    def __init__(self, width: int, height: int, fps: float, rate: int = 48_000, period_s: float = 1.0) -> None:
        self.clock_rate = rate
        self._size = (width, height)
        self._fps = fps
        self._period = max(1, round(period_s * fps))

    def _picture(self, k: int, flash: bool) -> np.ndarray:
        width, height = self._size
        if flash:
            return np.full((height, width, 3), 255, np.uint8)
        image = np.full((height, width, 3), 40, np.uint8)
        phase = (k % self._period) / self._period
        x = int(phase * (width - width // 10))
        image[height // 3 : 2 * height // 3, x : x + width // 10] = (40, 160, 255)
        return image

    async def items(self) -> AsyncIterator[SourceItem]:
        yield Connected("sync test pattern (flash + beep once a second)", self.clock_rate, self._fps)
        rate, fps = self.clock_rate, self._fps
        start = monotonic()
        k = 0
        while True:
            due = start + k / fps
            await asyncio.sleep(max(0.0, due - monotonic()))
            pos = round(k * rate / fps)
            length = round((k + 1) * rate / fps) - pos
            flash = k % self._period == 0
            if flash:
                t = np.arange(length) / rate
                audio = (0.5 * 32767 * np.sin(2 * np.pi * self.BEEP_HZ * t)).astype(np.int16)
            else:
                audio = np.zeros(length, np.int16)
            yield SourceFrame(pos, self._picture(k, flash), audio, speaking=flash)
            k += 1

    async def say(self, text: str, turn_id: str = "") -> None:
        raise NotConnected("the sync test pattern does not speak")

    async def send_speech(
        self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool, turn_id: str = ""
    ) -> None:
        raise NotConnected("the sync test pattern does not speak")

    async def interrupt(self) -> None:
        pass

    async def behaviour(self, name: str) -> None:
        pass
