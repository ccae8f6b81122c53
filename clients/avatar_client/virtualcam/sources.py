"""Where the avatar's frames come from: a node through the SDK (reconnecting on its own), or a
built-in sync test pattern. The rest of the virtual camera sees only `FrameSource`, so another
producer (an in-process pipeline) can stand in for the node."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np

from ..client import AsyncAvatarClient
from ..decode import H264Decoder, VideoFrame
from ..errors import AvatarError
from ..events import AudioPacket, Ended, Stats, TurnEvent, TurnKind, VideoPacket
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


SourceItem = SourceFrame | Connected | Disconnected | TurnStarted | TurnFinished | SourceHealth


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


#: Errors that a retry cannot fix: report them and stop.
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
}


class NodeSource:
    """A live session on an avatar node, reopened with backoff whenever it is lost.

    Lost means: the node cannot be reached, it refuses for a reason that may pass (full,
    draining), the stream breaks, or no frame arrives for `stall_s` seconds. Each new session
    continues the timeline after the previous one, so positions never go backwards.
    """

    BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)

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
        self._start = dict(
            image=image, avatar_id=avatar_id, engine=engine, voice=voice,
            width=width, height=height, fps=fps, mode="live", stats_interval_ms=1000,
        )
        self._stall_s = stall_s
        self._connect_timeout_s = connect_timeout_s
        self.clock_rate = 48_000
        self._session = None  # type: ignore[var-annotated]
        self._base = 0
        self._next_base = 0

    async def items(self) -> AsyncIterator[SourceItem]:
        attempt = 0
        while True:
            opened = await self._connect_once()
            if isinstance(opened, str):
                reason = opened
                attempt += 1
            else:
                reason = "the session ended"
                session_items = self._run_session(opened)
                try:
                    async for item in session_items:
                        if isinstance(item, str):
                            reason = item
                            break
                        yield item
                finally:
                    await session_items.aclose()
                attempt = 1
            delay = self.BACKOFF_S[min(attempt, len(self.BACKOFF_S)) - 1]
            yield Disconnected(str(reason), delay, attempt)
            await asyncio.sleep(delay)

    async def _connect_once(self):  # type: ignore[no-untyped-def]
        """A started session, or the reason none could be had."""
        client = AsyncAvatarClient(
            self.target,
            self._token,
            credentials=self._credentials,
            channel_options=[("grpc.initial_reconnect_backoff_ms", 300), ("grpc.max_reconnect_backoff_ms", 2000)],
        )
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                session = await client.start_session(**self._start)  # type: ignore[arg-type]
        except TimeoutError:
            await client.aclose()
            return f"no answer from {self.target} within {self._connect_timeout_s:g} s"
        except AvatarError as error:
            await client.aclose()
            if error.code in _PERMANENT:
                raise CamError(f"the node refused the session: {error}") from None
            return str(error)
        except BaseException:
            await client.aclose()
            raise
        return client, session

    async def _run_session(self, opened) -> AsyncGenerator[SourceItem | str, None]:  # type: ignore[no-untyped-def]
        client, session = opened
        ready = session.ready
        self.clock_rate = ready.clock_rate
        self._base = base = self._next_base
        frame_ticks = round(ready.clock_rate / ready.fps)
        last_pts = -frame_ticks
        reason = "the node ended the session"
        events = session.events()
        self._session = session
        try:
            yield Connected(
                f"{self.target}: session {ready.session_id}, {ready.width}x{ready.height} at "
                f"{ready.fps:g} fps, engine {ready.engine}",
                ready.clock_rate,
                ready.fps,
            )
            decoder = H264Decoder(ready.codec_config)
            audio_by_pts: dict[int, np.ndarray] = {}
            waiting: collections.deque[VideoFrame] = collections.deque()
            latest_audio = -1
            while True:
                try:
                    # A live session sends a frame every 1/fps: silence this long means the
                    # node (or the path to it) is stuck, and a new session is the way out.
                    async with asyncio.timeout(self._stall_s):
                        event = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    reason = f"no frames from the node for {self._stall_s:g} s (stalled?)"
                    break
                except AvatarError as error:
                    if error.code in _PERMANENT:
                        raise CamError(f"the node stopped the session: {error}") from None
                    reason = str(error)
                    break
                if isinstance(event, VideoPacket):
                    waiting.extend(decoder.decode(event))
                elif isinstance(event, AudioPacket):
                    audio_by_pts[event.pts] = event.samples
                    latest_audio = max(latest_audio, event.pts)
                elif isinstance(event, TurnEvent):
                    if event.kind == TurnKind.STARTED:
                        yield TurnStarted(event.turn_id, base + event.pts)
                    elif event.kind == TurnKind.FINISHED:
                        yield TurnFinished(event.turn_id, base + event.pts, event.interrupted, event.played_ms)
                elif isinstance(event, Stats):
                    yield SourceHealth(event.speech_underruns, event.frames_dropped)
                elif isinstance(event, Ended):
                    reason = f"the node ended the session ({event.reason})"
                while waiting and (waiting[0].pts in audio_by_pts or latest_audio > waiting[0].pts):
                    frame = waiting.popleft()
                    audio = audio_by_pts.pop(frame.pts, None)
                    if audio is None:  # never sent: keep the timeline whole with silence
                        audio = np.zeros(frame_ticks, np.int16)
                    for old in [p for p in audio_by_pts if p < frame.pts]:
                        del audio_by_pts[old]
                    last_pts = frame.pts
                    yield SourceFrame(base + frame.pts, frame.image, audio, frame.speaking)
            yield reason
        finally:
            self._session = None
            # The next session continues one second after this one's last frame.
            self._next_base = base + last_pts + frame_ticks + ready.clock_rate
            await events.aclose()
            await session.aclose()
            await client.aclose()

    def _live(self):  # type: ignore[no-untyped-def]
        if self._session is None or self._session.closed:
            raise NotConnected(f"not connected to the node at {self.target}")
        return self._session

    async def say(self, text: str, turn_id: str = "") -> None:
        await self._live().say(text, turn_id=turn_id)

    async def send_speech(
        self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool, turn_id: str = ""
    ) -> None:
        await self._live().send_audio(pcm, sample_rate, end_of_turn=end_of_turn, turn_id=turn_id)

    async def interrupt(self) -> None:
        await self._live().interrupt()

    async def behaviour(self, name: str) -> None:
        await self._live().behaviour(name)


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
