"""One unbroken output timeline across node sessions, outages and reconnections.

A live stream must never stop: OBS and RTMP services treat a pause as the end. While a source
delivers frames they pass through untouched (renumbered onto the output timeline); if it
stalls or is lost, still frames made here take over at once and the source is reopened with
back-off. Its frames are taken again from its next keyframe, so the H.264 stays decodable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

import grpc
import numpy as np
from avatar_client import AvatarError

from .errors import NodeUnavailable
from .feed import AvatarSource, FeedFormat, FeedFrame, SourceOpener
from .idle import IdleFrames
from .publisher import StreamFrame

log = logging.getLogger(__name__)

#: Node errors that retrying cannot fix: the command stops and says why.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass
class TimelineStats:
    node_frames: int = 0
    idle_frames: int = 0
    sessions: int = 0  # node sessions opened
    outages: int = 0  # times the stream fell back to idle frames
    connected: bool = False
    last_error: str = ""


class LiveTimeline:
    """Frames for the publisher, paced at 1x, from whatever source is available.

    `frames()` yields `StreamFrame`s forever (until cancelled). Controls (`say`, `interrupt`...)
    go to the current source and raise `NodeUnavailable` when there is none.
    """

    def __init__(
        self,
        open_source: SourceOpener,
        fmt: FeedFormat,
        idle: IdleFrames,
        *,
        stall_s: float = 1.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 10.0,
        describe_node: str = "the node",
    ) -> None:
        self.format = fmt
        self.stats = TimelineStats()
        self._open_source = open_source
        self._idle = idle
        self._stall_s = stall_s
        self._retry = (retry_min_s, retry_max_s)
        self._describe_node = describe_node
        self._source: AvatarSource | None = None
        self._generation = 0
        self._inbox: asyncio.Queue[tuple[int, FeedFrame]] = asyncio.Queue(maxsize=2 * round(fmt.fps))
        self._frame_s = 1.0 / fmt.fps
        self.connected_event = asyncio.Event()

    # ------------------------------------------------------------------ controls

    def _current(self) -> AvatarSource:
        if self._source is None:
            raise NodeUnavailable(
                f"{self._describe_node} is not reachable right now; the stream shows a still picture "
                "and reconnects by itself"
            )
        return self._source

    async def say(self, text: str) -> None:
        await self._control(self._current().say(text))

    async def send_audio(self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool = False) -> None:
        await self._control(self._current().send_audio(pcm, sample_rate, end_of_turn))

    async def end_turn(self) -> None:
        await self._control(self._current().end_turn())

    async def interrupt(self) -> None:
        await self._control(self._current().interrupt())

    async def behaviour(self, name: str) -> None:
        await self._control(self._current().behaviour(name))

    async def _control(self, call: Awaitable[None]) -> None:
        try:
            await call
        except AvatarError as error:
            raise NodeUnavailable(f"{self._describe_node} did not take it: {error}") from None

    # ------------------------------------------------------------------ frames

    async def frames(self) -> AsyncIterator[StreamFrame]:
        keeper = asyncio.create_task(self._keep_source(), name="avatar-obs-source")
        index = 0
        idle = True  # until the first node keyframe
        self._idle.hold()
        next_idle_at = time.monotonic()
        last_node_at = 0.0
        last_source: tuple[int, int] | None = None  # (generation, source frame index)
        last_keyframe: bytes | None = None
        try:
            while True:
                if keeper.done():
                    keeper.result()  # a fatal node error ends the stream with its message
                    raise RuntimeError("the source keeper stopped")
                now = time.monotonic()
                if idle:
                    timeout = max(0.0, next_idle_at - now)
                else:
                    timeout = max(0.0, last_node_at + self._stall_s - now)
                try:
                    async with asyncio.timeout(timeout):
                        generation, frame = await self._inbox.get()
                except TimeoutError:
                    if not idle:  # the node stalled or went away: hold its last picture
                        idle = True
                        self.stats.outages += 1
                        log.warning(
                            "no frames from %s for %.1f s; showing a still picture until it is back",
                            self._describe_node,
                            self._stall_s,
                        )
                        self._idle.hold(last_keyframe)
                        next_idle_at = time.monotonic()
                    encoded, keyframe, audio = self._idle.next()
                    index += 1
                    self.stats.idle_frames += 1
                    next_idle_at += self._frame_s
                    if next_idle_at < time.monotonic() - self._frame_s:  # we fell behind: do not burst
                        next_idle_at = time.monotonic()
                    yield StreamFrame(index, encoded, keyframe, audio, idle=True)
                    continue

                if idle or (last_source is not None and last_source[0] != generation):
                    if not frame.keyframe:
                        continue  # cannot splice into the middle of a GOP; idle frames go on
                    idle = False
                    index += 1
                elif last_source is not None:
                    # Keep the node's own spacing (a frame it skipped stays a gap), never go back.
                    index += max(1, frame.index - last_source[1])
                else:
                    index += 1
                last_source = (generation, frame.index)
                last_node_at = time.monotonic()
                if frame.keyframe:
                    last_keyframe = frame.encoded
                self.stats.node_frames += 1
                yield StreamFrame(index, frame.encoded, frame.keyframe, frame.audio)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
            self._idle.close()

    async def _keep_source(self) -> None:
        """Open a source, forward its frames, and reopen it with back-off when it is lost."""
        delay = self._retry[0]
        while True:
            try:
                source = await self._open_source()
            except AvatarError as error:
                if error.code in FATAL_CODES:
                    raise
                self._report(f"cannot start a session on {self._describe_node}: {error}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry[1])
                continue
            try:
                self._check_format(source.format)
                self._generation += 1
                self._source = source
                self.stats.sessions += 1
                self.stats.connected = True
                self.connected_event.set()
                if self.stats.last_error:
                    log.warning("%s is back; the avatar is live again", self._describe_node)
                self.stats.last_error = ""
                delay = self._retry[0]
                async for frame in source.frames():
                    if self._inbox.full():  # the consumer is stuck: keep the newest
                        self._inbox.get_nowait()
                    self._inbox.put_nowait((self._generation, frame))
                self._report(f"{self._describe_node} ended the session")
            except AvatarError as error:
                if error.code in FATAL_CODES:
                    raise
                self._report(f"lost {self._describe_node}: {error}")
            finally:
                self._source = None
                self.stats.connected = False
                self.connected_event.clear()
                await _close_quietly(source)
            await asyncio.sleep(delay)

    def _check_format(self, got: FeedFormat) -> None:
        want = self.format
        if (got.width, got.height, got.clock_rate) != (want.width, want.height, want.clock_rate) or abs(
            got.fps - want.fps
        ) > 1e-6:
            raise AvatarError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the node sends {got.width}x{got.height} at {got.fps:g} fps ({got.clock_rate} Hz) but the "
                f"stream is {want.width}x{want.height} at {want.fps:g} fps ({want.clock_rate} Hz); "
                "pass a --size and --fps the node supports",
            )

    def _report(self, message: str) -> None:
        if message != self.stats.last_error:
            log.warning("%s; retrying (the stream shows a still picture meanwhile)", message)
        self.stats.last_error = message


async def _close_quietly(source: AvatarSource) -> None:
    """Close a source even if this task is being cancelled (the close itself is shielded)."""
    closing = asyncio.ensure_future(source.aclose())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.shield(closing)
        raise
    except Exception:
        pass
