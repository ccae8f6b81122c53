"""One session behind a live feed: on a node over gRPC, or on an in-process `AvatarRuntime`.

A link yields its own session's frames (index and pts counted from its start) and turn events,
and takes the controls; it ends when its session does. The feed places what it yields on one
timeline and opens another link when one is lost. Nothing of `avatar_node` is imported until a
runtime link opens, so a client of a node stays light.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import numpy as np

from .client import AsyncAvatarClient
from .decode import H264Decoder, VideoFrame
from .errors import AvatarError
from .events import AudioPacket, Notice, Stats, TurnEvent, TurnKind, VideoPacket
from .feed_items import FeedFormat, FeedFrame, FeedHealth, FeedNotice, FeedTurn
from .pairing import AvPairer
from .session import AvatarSession
from .session_spec import SessionSpec

if TYPE_CHECKING:
    from avatar_node.pipeline import AvatarRuntime, AvatarStream

_NO_AUDIO = np.zeros(0, np.int16)
_TURN_KINDS = {TurnKind.STARTED: "started", TurnKind.FINISHED: "finished"}
#: How often a session reports its counters (`FeedHealth`).
STATS_INTERVAL_MS = 1000
LinkItem = FeedFrame | FeedTurn | FeedHealth | FeedNotice


class Link(Protocol):
    format: FeedFormat
    description: str

    def items(self) -> AsyncIterator[LinkItem]: ...

    async def say(self, text: str, voice: str, turn_id: str) -> None: ...

    async def send_audio(
        self, pcm: np.ndarray | bytes, sample_rate: int, end_of_turn: bool, turn_id: str, channels: int
    ) -> None: ...

    async def end_turn(self, turn_id: str) -> None: ...

    async def listen(self, pcm: np.ndarray | bytes, sample_rate: int, channels: int) -> None: ...

    async def interrupt(self) -> None: ...

    async def behaviour(self, name: str) -> None: ...

    async def aclose(self) -> None: ...


class NodeLink:
    """A live session on a node, its video paired with its audio by pts (and decoded for "rgb")."""

    def __init__(self, client: AsyncAvatarClient, session: AvatarSession, spec: SessionSpec) -> None:
        self._client = client
        self._session = session
        self._spec = spec
        ready = session.ready
        self.format = FeedFormat(ready.width, ready.height, ready.fps, ready.clock_rate, ready.codec_config)
        self.description = (
            f"{client.target}: session {ready.session_id}, {ready.width}x{ready.height} at {ready.fps:g} fps, "
            f"engine {ready.engine}"
        )

    @classmethod
    async def open(
        cls, target: str, token: str | None, credentials: grpc.ChannelCredentials | None, spec: SessionSpec
    ) -> NodeLink:
        # Short reconnect back-off in the channel: the feed does its own, and a restarted node
        # should be found as soon as it listens again.
        client = AsyncAvatarClient(
            target, token, credentials=credentials,
            channel_options=[("grpc.initial_reconnect_backoff_ms", 300), ("grpc.max_reconnect_backoff_ms", 2000)],
        )
        try:
            session = await client.start_session(**spec.start_options(), stats_interval_ms=STATS_INTERVAL_MS)
        except BaseException:
            await client.aclose()
            raise
        return cls(client, session, spec)

    async def items(self) -> AsyncIterator[LinkItem]:
        decode = self._spec.video == "rgb"
        decoder = H264Decoder(self._session.ready.codec_config) if decode else None
        pairer: AvPairer[Any] = AvPairer(lambda video: video.pts)
        async for event in self._session.events():
            if isinstance(event, VideoPacket):
                pairer.add_video(decoder.decode(event) if decoder is not None else [event])
            elif isinstance(event, AudioPacket):
                pairer.add_audio(event.pts, event.samples)
            elif isinstance(event, TurnEvent) and event.kind in _TURN_KINDS:
                yield FeedTurn(event.turn_id, _TURN_KINDS[event.kind], event.pts, event.interrupted, event.played_ms)
                continue
            elif isinstance(event, Stats):
                yield FeedHealth(event.speech_underruns, event.frames_dropped)
                continue
            elif isinstance(event, Notice):
                yield FeedNotice(event.code, event.message)
                continue
            else:
                continue
            for video, audio in pairer.ready():
                yield _node_frame(video, _NO_AUDIO if audio is None else audio)

    async def say(self, text: str, voice: str, turn_id: str) -> None:
        await self._session.say(text, voice=voice, turn_id=turn_id)

    async def send_audio(
        self, pcm: np.ndarray | bytes, sample_rate: int, end_of_turn: bool, turn_id: str, channels: int
    ) -> None:
        await self._session.send_audio(pcm, sample_rate, end_of_turn=end_of_turn, turn_id=turn_id, channels=channels)

    async def end_turn(self, turn_id: str) -> None:
        await self._session.end_turn(turn_id)

    async def listen(self, pcm: np.ndarray | bytes, sample_rate: int, channels: int) -> None:
        await self._session.send_listen_audio(pcm, sample_rate, channels)

    async def interrupt(self) -> None:
        await self._session.interrupt()

    async def behaviour(self, name: str) -> None:
        await self._session.behaviour(name)

    async def aclose(self) -> None:
        try:
            await self._session.aclose()
        finally:
            await self._client.aclose()


def _node_frame(video: VideoFrame | VideoPacket, audio: np.ndarray) -> FeedFrame:
    if isinstance(video, VideoFrame):
        return FeedFrame(video.index, video.pts, video.image, None, False, audio, video.speaking)
    return FeedFrame(video.frame_index, video.pts, None, video.data, video.keyframe, audio, video.speaking)


class RuntimeLink:
    """A live stream of an `AvatarRuntime` in this process: no gRPC, no encoding for "rgb"."""

    def __init__(self, stream: AvatarStream) -> None:
        options = stream.options
        self._stream = stream
        self.format = FeedFormat(options.width, options.height, options.fps, options.clock_rate, stream.codec_config)
        self.description = (
            f"in-process runtime: {options.width}x{options.height} at {options.fps:g} fps, "
            f"engine {stream.engine.info.name}"
        )

    @classmethod
    async def open(cls, runtime: AvatarRuntime, spec: SessionSpec) -> RuntimeLink:
        from avatar_node.pipeline import PipelineError, SessionOptions

        options = SessionOptions(
            engine=spec.engine, live=True, width=spec.width, height=spec.height, fps=spec.fps,
            clock_rate=spec.audio_sample_rate, keyframe_interval=spec.keyframe_interval, voice=spec.voice,
            prompt=spec.prompt, framing=spec.framing, video=spec.video, stats_interval_ms=STATS_INTERVAL_MS,
        )
        try:
            return cls(await runtime.open_stream(spec.avatar, options))
        except PipelineError as error:
            raise _as_avatar_error(error) from None

    async def items(self) -> AsyncIterator[LinkItem]:
        from avatar_node.pipeline import AVFrame, Ended, Notice, Stats, TurnEvent, TurnKind

        kinds = {TurnKind.STARTED: "started", TurnKind.FINISHED: "finished"}
        async for item in self._stream:
            if isinstance(item, AVFrame):
                yield FeedFrame(
                    item.index, item.pts, item.image, item.encoded, item.keyframe, item.audio, item.speaking
                )
            elif isinstance(item, TurnEvent) and item.kind in kinds:
                yield FeedTurn(item.turn_id, kinds[item.kind], item.pts, item.interrupted, item.played_ms)
            elif isinstance(item, Stats):
                yield FeedHealth(item.speech_underruns, item.frames_dropped)
            elif isinstance(item, Notice):
                yield FeedNotice(item.code.value, item.message)
            elif isinstance(item, Ended):
                return

    async def say(self, text: str, voice: str, turn_id: str) -> None:
        await self._call(self._stream.say(text, voice=voice, turn_id=turn_id))

    async def send_audio(
        self, pcm: np.ndarray | bytes, sample_rate: int, end_of_turn: bool, turn_id: str, channels: int
    ) -> None:
        await self._call(
            self._stream.push_speech(pcm, sample_rate, channels, end_of_turn=end_of_turn, turn_id=turn_id)
        )

    async def end_turn(self, turn_id: str) -> None:
        rate = self._stream.options.clock_rate
        await self._call(self._stream.push_speech(b"", rate, end_of_turn=True, turn_id=turn_id))

    async def listen(self, pcm: np.ndarray | bytes, sample_rate: int, channels: int) -> None:
        await self._call(self._stream.push_listen(pcm, sample_rate, channels))

    async def interrupt(self) -> None:
        self._stream.interrupt()

    async def behaviour(self, name: str) -> None:
        self._stream.behaviour(name)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def _call(self, work: Any) -> None:
        from avatar_node.pipeline import PipelineError

        try:
            await work
        except PipelineError as error:
            raise _as_avatar_error(error) from None


def _as_avatar_error(error: Any) -> AvatarError:
    """The runtime's error as the SDK's own, so a feed's caller catches one type either way."""
    return AvatarError(grpc.StatusCode[error.code.name], error.message, error.reason)
