"""Where the avatar's frames come from: a small interface, and its implementation over the SDK.

The publisher only needs per-frame items (an H.264 access unit, its keyframe flag and exactly
that frame's speech audio) and a few controls. `AvatarSource` is that contract; `NodeSource`
fulfils it with a live session on a node reached through `avatar_client`. An in-process
pipeline can fulfil it the same way without gRPC.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np
from avatar_client import (
    AsyncAvatarClient,
    AudioPacket,
    AvatarError,
    AvatarSession,
    Notice,
    TurnEvent,
    VideoPacket,
)


@dataclass(frozen=True)
class FeedFormat:
    """The picture and clock every frame of a source shares."""

    width: int
    height: int
    fps: float
    clock_rate: int  # pts ticks per second, also the speech audio's sample rate
    codec_config: bytes = field(default=b"", repr=False)  # SPS + PPS, Annex B

    def ticks(self, index: int) -> int:
        """The pts of frame `index` on this clock."""
        return round(index * self.clock_rate / self.fps)


@dataclass(frozen=True)
class FeedFrame:
    """One frame of a source: the encoded picture and the speech audio that plays with it."""

    index: int  # frame number in the source's own session
    encoded: bytes = field(repr=False)  # one H.264 access unit, Annex B
    keyframe: bool
    audio: np.ndarray = field(repr=False)  # int16 mono at clock_rate: exactly this frame's slice
    speaking: bool


class AvatarSource(Protocol):
    """A running avatar: frames out, speech and controls in."""

    format: FeedFormat

    def frames(self) -> AsyncIterator[FeedFrame]:
        """Frames in order, paced at 1x, until the source ends (then the iterator stops)."""
        ...

    async def say(self, text: str) -> None: ...

    async def send_audio(self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool = False) -> None: ...

    async def end_turn(self) -> None: ...

    async def interrupt(self) -> None: ...

    async def behaviour(self, name: str) -> None: ...

    async def aclose(self) -> None: ...


class SourceOpener(Protocol):
    """Opens a fresh source; called again after a source is lost."""

    async def __call__(self) -> AvatarSource: ...


@dataclass(frozen=True)
class SessionRequest:
    """What to ask the node for."""

    image: bytes | None = None
    avatar_id: str = ""
    engine: str = ""
    voice: str = ""
    width: int = 848
    height: int = 480
    fps: float = 0.0  # 0: the engine's own rate (`resolve_fps` asks the node which)
    # One keyframe a second: OBS (or a viewer) joining at any moment shows a picture within 1 s.
    keyframe_seconds: float = 1.0


class NodeSource:
    """A live session on an avatar node, through the SDK."""

    def __init__(
        self,
        client: AsyncAvatarClient,
        session: AvatarSession,
        on_turn: Callable[[TurnEvent], None] | None = None,
        on_notice: Callable[[Notice], None] | None = None,
    ) -> None:
        self._client = client
        self._session = session
        self._on_turn = on_turn
        self._on_notice = on_notice
        ready = session.ready
        self.format = FeedFormat(ready.width, ready.height, ready.fps, ready.clock_rate, ready.codec_config)

    @classmethod
    async def open(
        cls,
        target: str,
        token: str | None,
        request: SessionRequest,
        on_turn: Callable[[TurnEvent], None] | None = None,
        on_notice: Callable[[Notice], None] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> NodeSource:
        client = AsyncAvatarClient(target, token, credentials=credentials)
        try:
            session = await client.start_session(
                image=request.image,
                avatar_id=request.avatar_id,
                engine=request.engine,
                voice=request.voice,
                width=request.width,
                height=request.height,
                fps=request.fps,
                mode="live",
                keyframe_interval=max(1, round(request.fps * request.keyframe_seconds)),
            )
        except BaseException:
            await client.aclose()
            raise
        return cls(client, session, on_turn, on_notice)

    async def frames(self) -> AsyncIterator[FeedFrame]:
        """Pair each video packet with the audio packet of the same pts (the node sends one each)."""
        silence = np.zeros(0, np.int16)
        waiting: collections.deque[VideoPacket] = collections.deque()
        audio_by_pts: dict[int, np.ndarray] = {}
        latest_audio = -1
        async for event in self._session.events():
            if isinstance(event, VideoPacket):
                waiting.append(event)
            elif isinstance(event, AudioPacket):
                audio_by_pts[event.pts] = event.samples
                latest_audio = max(latest_audio, event.pts)
            elif isinstance(event, TurnEvent):
                if self._on_turn is not None:
                    self._on_turn(event)
                continue
            elif isinstance(event, Notice):
                if self._on_notice is not None:
                    self._on_notice(event)
                continue
            else:
                continue
            while waiting:
                video = waiting[0]
                if video.pts in audio_by_pts:
                    audio = audio_by_pts.pop(video.pts)
                elif latest_audio > video.pts:
                    audio = silence
                else:
                    break
                waiting.popleft()
                for stale in [p for p in audio_by_pts if p < video.pts]:
                    del audio_by_pts[stale]
                yield FeedFrame(video.frame_index, video.data, video.keyframe, audio, video.speaking)

    async def say(self, text: str) -> None:
        await self._session.say(text)

    async def send_audio(self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool = False) -> None:
        await self._session.send_audio(pcm, sample_rate, end_of_turn=end_of_turn)

    async def end_turn(self) -> None:
        await self._session.end_turn()

    async def interrupt(self) -> None:
        await self._session.interrupt()

    async def behaviour(self, name: str) -> None:
        await self._session.behaviour(name)

    async def aclose(self) -> None:
        try:
            await self._session.aclose()
        finally:
            await self._client.aclose()


async def resolve_fps(
    target: str, token: str | None, request: SessionRequest, credentials: grpc.ChannelCredentials | None = None
) -> SessionRequest:
    """`request` with its fps set: as asked, or the engine's own rate from the node's info.

    The stream passes the node's H.264 through, so it runs at the rate the node renders;
    it must be known before the first frame, because the output timeline never changes rate.
    """
    if request.fps > 0:
        return request
    async with AsyncAvatarClient(target, token, credentials=credentials) as client:
        info = await client.node_info()
    name = request.engine or info.default_engine
    for engine in info.engines:
        if engine.name == name:
            return dataclasses.replace(request, fps=engine.native_fps)
    known = ", ".join(e.name for e in info.engines) or "none"
    raise AvatarError(grpc.StatusCode.NOT_FOUND, f"the node has no engine {name!r} (it has: {known})")


def node_opener(
    target: str,
    token: str | None,
    request: SessionRequest,
    on_turn: Callable[[TurnEvent], None] | None = None,
    on_notice: Callable[[Notice], None] | None = None,
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> SourceOpener:
    """A `SourceOpener` that starts a live session on the node at `target`."""

    async def open_source() -> AvatarSource:
        return await NodeSource.open(target, token, request, on_turn, on_notice, credentials)

    return open_source
