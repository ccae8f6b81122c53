"""Rendering in this process: the avatar pipeline (`avatar_node.pipeline`) as a renderer.

The engine (the CPU portrait engine unless told otherwise) runs on the runtime's threads;
frames come out as RGB pictures with their exact audio slices, at 1x (a live stream).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from avatar_node.pipeline import (
    AvatarRuntime,
    AvatarStream,
    AVFrame,
    Ended,
    Notice,
    PipelineError,
    SessionOptions,
    TurnEvent,
    TurnKind,
)

from .errors import AvatarLiveKitError, check_video_format
from .frames import RenderedFrame, RenderItem, TurnFinished, TurnStarted, VideoFormat

log = logging.getLogger(__name__)


class PipelineRenderer:
    """One live stream of an `AvatarRuntime`; owns the runtime too when it made it."""

    def __init__(self, stream: AvatarStream, runtime: AvatarRuntime, owns_runtime: bool) -> None:
        options = stream.options
        self.stream = stream
        self.runtime = runtime
        self._owns_runtime = owns_runtime
        self.format = VideoFormat(options.width, options.height, options.fps, options.clock_rate)
        self._open_turn: str | None = None
        self._turn_rates: dict[str, int] = {}
        self._started_pts: dict[str, int] = {}
        self._closed = False

    @classmethod
    async def open(
        cls,
        photo: bytes | str,
        *,
        runtime: AvatarRuntime | None = None,
        engine: str = "",
        width: int = 848,
        height: int = 480,
        fps: float = 0.0,
        sample_rate: int = 48000,
        framing: str = "auto",
        prompt: str = "",
    ) -> PipelineRenderer:
        """A live stream for a photo (bytes) or a prepared avatar id, at the given size."""
        check_video_format(width, height, fps)
        owns = runtime is None
        if runtime is None:
            runtime = AvatarRuntime([engine] if engine else ["portrait"], max_sessions=1, text_to_speech=False)
            await runtime.start()
        options = SessionOptions(
            engine=engine, live=True, width=width, height=height, fps=fps, clock_rate=sample_rate,
            video="rgb", framing=framing, prompt=prompt,
        )
        try:
            stream = await runtime.open_stream(photo, options)
        except BaseException as exc:
            if owns:
                await runtime.aclose()
            if isinstance(exc, PipelineError):
                raise AvatarLiveKitError(str(exc)) from None
            raise
        return cls(stream, runtime, owns)

    async def push_speech(self, pcm: bytes, sample_rate: int, channels: int, turn_id: str) -> None:
        self._open_turn = turn_id
        self._turn_rates[turn_id] = sample_rate
        await self.stream.push_speech(pcm, sample_rate, channels, turn_id=turn_id)

    async def end_turn(self, turn_id: str) -> None:
        if self._open_turn != turn_id:
            return  # interrupted meanwhile: the pipeline already finished it
        self._open_turn = None
        rate = self._turn_rates.pop(turn_id, self.format.sample_rate)
        await self.stream.push_speech(b"", rate, end_of_turn=True, turn_id=turn_id)

    def interrupt(self) -> None:
        self._open_turn = None
        self.stream.interrupt()

    async def items(self) -> AsyncIterator[RenderItem]:
        async for item in self.stream:
            if isinstance(item, AVFrame):
                assert item.image is not None
                yield RenderedFrame(item.image, item.audio, item.speaking)
            elif isinstance(item, TurnEvent):
                if item.kind is TurnKind.STARTED:
                    self._started_pts[item.turn_id] = item.pts
                    yield TurnStarted(item.turn_id)
                elif item.kind is TurnKind.FINISHED:
                    self._turn_rates.pop(item.turn_id, None)
                    start = self._started_pts.pop(item.turn_id, None)
                    if start is not None:
                        played = (item.pts - start) / self.format.sample_rate
                    else:
                        played = item.played_ms / 1000
                    yield TurnFinished(item.turn_id, played, item.interrupted)
            elif isinstance(item, Notice):
                log.info("avatar: %s", item.message)
            elif isinstance(item, Ended):
                return

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.stream.aclose()
        finally:
            if self._owns_runtime:
                await self.runtime.aclose()
