"""A live avatar as one unbroken timeline of frames, over a node or an in-process runtime.

    feed = await LiveFeed.open_node("node:50051", token, tls_credentials(ca="ca.pem"), SessionSpec(photo=jpg))
    async for item in feed:            # FeedFrame, FeedTurn, FeedStatus
        ...
    await feed.aclose()

Timing contract: frame k has pts round(k * clock_rate / fps) and carries exactly the audio up
to frame k+1's pts. Indexes only grow. While the session's frames flow they pass through at the
node's own pace (a frame the node skipped stays a gap). When none has come for `idle_after_s`,
or the session is lost, the feed makes idle frames at the frame rate (the last picture, for
H.264 the last keyframe, with silence) until a session's frames come again, from a keyframe for
H.264. A session silent for `stall_s` is dropped; a lost one is reopened with doubling back-off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
import numpy as np

from .errors import AvatarError
from .feed_items import FeedFormat, FeedFrame, FeedHealth, FeedItem, FeedNotice, FeedStatus, FeedTurn
from .feed_links import Link, NodeLink, RuntimeLink
from .session_spec import SessionSpec

if TYPE_CHECKING:
    from avatar_node.pipeline import AvatarRuntime

__all__ = [
    "FeedFormat", "FeedFrame", "FeedHealth", "FeedNotice", "FeedStatus", "FeedTurn", "FeedUnavailable", "LiveFeed",
    "SessionSpec", "retry_delay",
]

#: Refusals at session start that a retry cannot fix: the feed stops and says why.
PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
#: How long closing waits for a session to close before leaving it to the node's own timeout.
CLOSE_WAIT_S = 3.0


def retry_delay(attempt: int, first_s: float = 0.5, most_s: float = 8.0) -> float:
    """Seconds before retry `attempt` (1, 2, ...): doubling from `first_s`, at most `most_s`."""
    return min(first_s * 2 ** (attempt - 1), most_s)


class FeedUnavailable(AvatarError):
    """A control was sent while the feed has no session (the node is away; it reconnects by itself)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message, "NODE_AWAY")


class LiveFeed:
    """Frames (`FeedFrame`), turn events (`FeedTurn`) and connection changes (`FeedStatus`) from
    one live session at a time, on one timeline that never goes back and never stops.

    Open with `open_node` or `open_runtime`; iterate (one reader); close with `aclose()`.
    Controls go to the current session and raise `FeedUnavailable` while there is none.
    """

    def __init__(
        self,
        first: Link | None,
        reopen: Callable[[], Awaitable[Link]],
        *,
        format: FeedFormat | None = None,
        describe: str,
        stall_s: float,
        idle_after_s: float,
        connect_timeout_s: float,
        retry_min_s: float,
        retry_max_s: float,
    ) -> None:
        if first is None and format is None:
            raise ValueError("a feed with no first session needs its format")
        self.format: FeedFormat = format if format is not None else first.format  # type: ignore[union-attr]
        self.describe = describe
        self.frames_dropped = 0  # node frames dropped because the reader fell behind
        self._reopen = reopen
        self._stall_s = stall_s
        self._idle_after_s = idle_after_s
        self._connect_timeout_s = connect_timeout_s
        self._retry = (retry_min_s, retry_max_s)
        self._link: Link | None = first
        self._generation = 0
        self._inbox: collections.deque[tuple[int, FeedItem]] = collections.deque()
        self._wake = asyncio.Event()
        self._fatal: BaseException | None = None
        self._closed = False
        # The reader's place on the timeline.
        self._index = -1
        self._joined: int | None = None  # the generation whose frames are passing through
        self._offset = 0  # feed index minus session index, for the joined generation
        self._last_node_at = 0.0
        # Without a first session, idle frames (no picture yet) keep the timeline going from now.
        self._idle_from_start = first is None
        self._next_idle_at = time.monotonic()
        self._last_picture: np.ndarray | None = None
        self._last_keyframe: bytes | None = None
        self._keeper = asyncio.create_task(self._keep(first), name="live-feed")

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open_node(
        cls,
        target: str,
        token: str | None,
        credentials: grpc.ChannelCredentials | None,
        spec: SessionSpec,
        *,
        stall_s: float = 3.0,
        idle_after_s: float = 0.5,
        connect_timeout_s: float = 15.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 8.0,
    ) -> LiveFeed:
        """A feed from the node at `target` (TLS when `credentials` are given).

        The first session must open (its format becomes the feed's); AvatarError says why not.
        """

        async def reopen() -> Link:
            return await NodeLink.open(target, token, credentials, spec)

        async with asyncio.timeout(connect_timeout_s):
            first = await reopen()
        return cls(first, reopen, describe="the node", stall_s=stall_s, idle_after_s=idle_after_s,
                   connect_timeout_s=connect_timeout_s, retry_min_s=retry_min_s, retry_max_s=retry_max_s)

    @classmethod
    async def open_runtime(
        cls, runtime: AvatarRuntime, spec: SessionSpec, *, stall_s: float = 3.0, idle_after_s: float = 0.5
    ) -> LiveFeed:
        """A feed from an `AvatarRuntime` in this process (started by the caller, who closes it)."""

        async def reopen() -> Link:
            return await RuntimeLink.open(runtime, spec)

        first = await reopen()
        return cls(first, reopen, describe="the in-process runtime", stall_s=stall_s, idle_after_s=idle_after_s,
                   connect_timeout_s=30.0, retry_min_s=0.5, retry_max_s=8.0)

    @classmethod
    def from_opener(
        cls,
        open_link: Callable[[], Awaitable[Link]],
        format: FeedFormat,
        *,
        describe: str,
        stall_s: float = 3.0,
        idle_after_s: float = 0.5,
        connect_timeout_s: float = 15.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 8.0,
    ) -> LiveFeed:
        """A feed that starts at once, in `format`, and opens its sessions with `open_link`.

        For a sink that must run from its first second whether or not the node is there (a
        stream): idle frames flow until a session's first keyframe, with no picture (`None`)
        until one was seen, so the sink shows its own placeholder. Each session must match
        `format`'s size, rate and clock; its codec config is adopted.
        """
        return cls(None, open_link, format=format, describe=describe, stall_s=stall_s, idle_after_s=idle_after_s,
                   connect_timeout_s=connect_timeout_s, retry_min_s=retry_min_s, retry_max_s=retry_max_s)

    # ------------------------------------------------------------------ controls

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._closed

    def _current(self) -> Link:
        if self._closed:
            raise AvatarError(grpc.StatusCode.FAILED_PRECONDITION, "the feed is closed; open a new one")
        if self._link is None:
            raise FeedUnavailable(
                f"{self.describe} is not reachable right now; the feed holds its last picture and reconnects "
                "by itself: send again once it is back"
            )
        return self._link

    async def say(self, text: str, voice: str = "", turn_id: str = "") -> None:
        """Have the avatar speak `text` with the node's voice."""
        await self._current().say(text, voice, turn_id)

    async def send_audio(
        self, pcm: np.ndarray | bytes, sample_rate: int, end_of_turn: bool = False, turn_id: str = "",
        channels: int = 1,
    ) -> None:
        """Speech for the avatar to say (int16 or float32 samples, or s16le bytes with `channels`
        interleaved channels; any rate). Consecutive calls form one turn until `end_of_turn`."""
        await self._current().send_audio(pcm, sample_rate, end_of_turn, turn_id, channels)

    async def end_turn(self, turn_id: str = "") -> None:
        await self._current().end_turn(turn_id)

    async def listen(self, pcm: np.ndarray | bytes, sample_rate: int, channels: int = 1) -> None:
        """The user's voice, as it is recorded, so the avatar shows it is listening (same formats as speech)."""
        await self._current().listen(pcm, sample_rate, channels)

    async def interrupt(self) -> None:
        """Barge in: stop speaking at the next frame and drop queued speech."""
        await self._current().interrupt()

    async def behaviour(self, name: str) -> None:
        await self._current().behaviour(name)

    # ------------------------------------------------------------------ the timeline

    def __aiter__(self) -> LiveFeed:
        return self

    async def __anext__(self) -> FeedItem:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._fatal is not None:
                raise self._fatal
            if self._inbox:
                generation, item = self._inbox.popleft()
                placed = self._place(generation, item)
                if placed is not None:
                    return placed
                continue
            now = time.monotonic()
            if self._index < 0 and not self._idle_from_start:
                due = None  # no picture yet to hold: wait for the first frame
            elif self._joined is not None:
                due = self._last_node_at + self._idle_after_s
            else:
                due = self._next_idle_at
            if due is not None and now >= due:
                if self._joined is not None:  # the session went quiet: hold its picture meanwhile
                    self._joined = None
                    self._next_idle_at = now
                return self._idle_frame(now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if due is None else due - now):
                    await self._wake.wait()

    def _place(self, generation: int, item: FeedItem) -> FeedItem | None:
        """A session's item on the feed's timeline, or None to drop it."""
        if isinstance(item, FeedStatus):
            if not item.connected and self._joined is not None:
                self._joined = None
                self._next_idle_at = max(time.monotonic(), self._last_node_at + 1 / self.format.fps)
            return item
        if generation != self._generation:
            return None  # from a session already given up
        if isinstance(item, FeedHealth | FeedNotice):
            return item
        fmt = self.format
        if isinstance(item, FeedTurn):
            if self._joined == generation:
                pts = item.pts + fmt.pts(self._offset)
            else:
                pts = fmt.pts(self._index + 1)
            return dataclasses.replace(item, pts=max(0, pts))
        assert isinstance(item, FeedFrame)
        if self._joined != generation:
            if item.access_unit is not None and not item.keyframe:
                return None  # H.264 can only be joined at a keyframe; idle frames go on meanwhile
            self._joined = generation
            self._offset = self._index + 1 - item.index
        index = max(self._index + 1, item.index + self._offset)
        self._offset = index - item.index
        self._index = index
        self._last_node_at = time.monotonic()
        if item.picture is not None:
            self._last_picture = item.picture
        if item.keyframe and item.access_unit is not None:
            self._last_keyframe = item.access_unit
        return dataclasses.replace(item, index=index, pts=fmt.pts(index), audio=_exact(item.audio, fmt.samples(index)))

    def _idle_frame(self, now: float) -> FeedFrame:
        fmt = self.format
        self._index += 1
        self._next_idle_at += 1 / fmt.fps
        if self._next_idle_at < now - 1 / fmt.fps:  # the reader fell behind: go on from now, no burst
            self._next_idle_at = now
        silence = np.zeros(fmt.samples(self._index), np.int16)
        h264 = self._last_keyframe is not None
        return FeedFrame(self._index, fmt.pts(self._index), self._last_picture, self._last_keyframe, h264, silence,
                         False, idle=True)

    # ------------------------------------------------------------------ sessions

    def _put(self, generation: int, item: FeedItem) -> None:
        self._inbox.append((generation, item))
        # A reader that stops reading must not grow memory: keep two seconds, drop the oldest frames.
        limit = max(2, round(2 * self.format.fps))
        if len(self._inbox) > limit:
            for position, (_, queued) in enumerate(self._inbox):
                if isinstance(queued, FeedFrame):
                    del self._inbox[position]
                    self.frames_dropped += 1
                    break
        self._wake.set()

    async def _keep(self, link: Link | None) -> None:
        """Forward the current session's items; reopen with back-off whenever it is lost."""
        attempt = 0
        try:
            while True:
                if link is None:
                    link, reason = await self._open()
                    if link is None:
                        attempt += 1
                        delay = retry_delay(attempt, *self._retry)
                        self._put(self._generation, FeedStatus(False, reason, delay, attempt))
                        await asyncio.sleep(delay)
                        continue
                    self._check_format(link)
                self._generation += 1
                self._link = link
                self._put(self._generation, FeedStatus(True, link.description))
                attempt = 0
                try:
                    reason = await self._forward(link, self._generation)
                finally:
                    self._link = None
                    closing, link = link, None
                    await _close(closing)
                attempt = 1
                self._put(self._generation, FeedStatus(False, reason, self._retry[0], attempt))
                await asyncio.sleep(self._retry[0])
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a refusal no retry fixes: the reader raises it
            self._fatal = error
            self._wake.set()
        finally:
            if link is not None:
                self._link = None
                await _close(link)

    async def _open(self) -> tuple[Link | None, str]:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await self._reopen(), ""
        except TimeoutError:
            return None, f"no answer from {self.describe} within {self._connect_timeout_s:g} s"
        except AvatarError as error:
            if error.code in PERMANENT:
                raise
            return None, f"cannot start a session on {self.describe}: {error}"

    async def _forward(self, link: Link, generation: int) -> str:
        """Pass a session's items to the reader until it ends; the reason it ended."""
        items = link.items()
        try:
            while True:
                try:
                    # A live session sends a frame every 1/fps: this long without one means it
                    # (or the path to it) is stuck, and a new session is the way out.
                    async with asyncio.timeout(self._stall_s):
                        item = await anext(items)
                except StopAsyncIteration:
                    return f"{self.describe} ended the session"
                except TimeoutError:
                    return f"no frames from {self.describe} for {self._stall_s:g} s (stalled?)"
                except AvatarError as error:
                    return f"lost {self.describe}: {error}"
                self._put(generation, item)
        finally:
            with contextlib.suppress(Exception):
                await items.aclose()  # type: ignore[attr-defined]

    def _check_format(self, link: Link) -> None:
        got, want = link.format, self.format
        if (got.width, got.height, got.clock_rate) != (want.width, want.height, want.clock_rate) or abs(
            got.fps - want.fps
        ) > 1e-6:
            raise AvatarError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{self.describe} now sends {got.width}x{got.height} at {got.fps:g} fps ({got.clock_rate} Hz) but "
                f"the feed is {want.width}x{want.height} at {want.fps:g} fps ({want.clock_rate} Hz); ask for a size "
                "the node supports, and an explicit fps so every session has the same rate",
            )
        if got.codec_config != want.codec_config:  # same picture, maybe another encoder build: decode with its own
            self.format = dataclasses.replace(want, codec_config=got.codec_config)

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Stop the feed and close its session. Idempotent; safe to cancel (the close goes on)."""
        self._closed = True
        self._wake.set()
        self._keeper.cancel()
        # Waiting on the task (not awaiting it) lets a cancelled aclose leave the keeper to finish.
        await asyncio.wait({self._keeper})
        if self._link is not None:  # the keeper was cancelled before it ever ran
            link, self._link = self._link, None
            await _close(link)

    async def __aenter__(self) -> LiveFeed:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _exact(audio: np.ndarray, samples: int) -> np.ndarray:
    """`audio` cut or padded with silence to exactly `samples` (a missing packet, a rounding sample)."""
    if len(audio) == samples:
        return audio
    if len(audio) > samples:
        return audio[:samples]
    return np.concatenate([audio, np.zeros(samples - len(audio), np.int16)])


async def _close(link: Link) -> None:
    """Close a session even while the closing task is being cancelled (the close itself is shielded)."""
    closing = asyncio.ensure_future(link.aclose())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(CLOSE_WAIT_S):
                await asyncio.shield(closing)
        raise
    except Exception:
        pass
