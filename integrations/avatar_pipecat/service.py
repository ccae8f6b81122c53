"""The avatar as a Pipecat video service: after the TTS, before the output transport.

    avatar = AvatarVideoService(photo=open("me.jpg", "rb").read())            # in this process
    avatar = AvatarVideoService(photo=..., node=NodeAddress("node:50051", token, tls_credentials(ca=...)))
    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts, avatar, transport.output(), assistant_agg])

It takes the TTS audio (`TTSAudioRawFrame`s, delimited by `TTSStartedFrame`/`TTSStoppedFrame`) and
pushes, for every frame of the avatar's timeline, its picture (`OutputImageRawFrame`, pts) and exactly
its audio: the TTS audio re-timed to the face, silence between turns, so idle video flows from the start.
`InterruptionFrame` and `UserStartedSpeakingFrame` stop the avatar at its next frame and drop queued
speech; speech already on its way is not pushed (see turns.py). The user's voice (`InputAudioRawFrame`,
which STT services pass on) makes the avatar show it is listening (`listen=False` to turn it off).
The session opens at `StartFrame` and closes at `EndFrame` (after the turn being said), `CancelFrame`
(at once) or cleanup; a node that goes away is reconnected while the last picture holds. A session
the node refuses (a wrong token, no face in the photo) is reported as an `ErrorFrame` and the
pipeline ends.

Pair it with a transport whose video size and rate are the service's (`video_out_width`,
`video_out_height`, `video_out_framerate`) and `audio_out_sample_rate` its `sample_rate`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from avatar_client.errors import AvatarError
from avatar_client.feed_items import FeedFrame, FeedStatus, FeedTurn
from avatar_client.live_feed import FeedUnavailable, LiveFeed, SessionSpec
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from .feed_source import FeedSource, NodeAddress
from .frames import audio_frame, picture_frame
from .turns import Kind, Turns

if TYPE_CHECKING:
    from avatar_node.pipeline import AvatarRuntime

#: How long EndFrame waits for the avatar to finish the turn it is saying.
END_WAIT_S = 30.0


@dataclass
class AvatarVideoSettings(ServiceSettings):
    """Nothing of the avatar changes while the pipeline runs; the session is set up at construction."""


class AvatarVideoService(AIService):
    """A talking avatar for Pipecat pipelines, rendered in this process or on an avatar node.

    Give `photo` (image bytes) or `avatar_id` (prepared on the node). Node mode: `node=NodeAddress(...)`.
    In-process: nothing (a CPU portrait runtime is made and closed with the service) or `runtime=`
    an `AvatarRuntime` you started and close. `fps=0` takes the engine's own rate. `listen`: the
    user's voice passing by drives the avatar's listening.
    """

    Settings = AvatarVideoSettings
    _settings: AvatarVideoSettings

    def __init__(
        self,
        *,
        photo: bytes | None = None,
        avatar_id: str = "",
        node: NodeAddress | None = None,
        runtime: AvatarRuntime | None = None,
        engine: str = "",
        width: int = 848,
        height: int = 480,
        fps: float = 25.0,
        sample_rate: int = 48_000,
        prompt: str = "",
        listen: bool = True,
        settings: AvatarVideoSettings | None = None,
        **kwargs: Any,
    ) -> None:
        defaults = AvatarVideoSettings(model=None)
        if settings is not None:
            defaults.apply_update(settings)
        super().__init__(settings=defaults, **kwargs)
        spec = SessionSpec(photo=photo, avatar_id=avatar_id, engine=engine, width=width, height=height, fps=fps,
                           prompt=prompt, audio_sample_rate=sample_rate, video="rgb")
        self._source = FeedSource(spec, node, runtime)
        self._listen = listen
        self._feed: LiveFeed | None = None
        self._pump: asyncio.Task[None] | None = None
        self._turns = Turns()
        self._finished = asyncio.Event()  # set whenever no speech is pending
        self._finished.set()
        #: Frames pushed (pictures), and frames whose stale speech was withheld after an interruption.
        self.frames_pushed = 0
        self.frames_withheld = 0
        self._rest: FeedFrame | None = None  # the latest idle frame with a picture: the face at rest

    @property
    def feed(self) -> LiveFeed | None:
        """The live feed while the pipeline runs (its format, `connected`)."""
        return self._feed

    # ------------------------------------------------------------------ lifecycle

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        try:
            self._feed = await self._source.open()
        except (AvatarError, TimeoutError, OSError) as error:
            await self._source.aclose()
            message = f"{self._source.describe} refused the avatar session: {error}"
            if isinstance(error, TimeoutError):
                message = f"{self._source.describe} did not answer; is it running, and is the address right?"
            await self.push_error(message, exception=error, force_treat_as_permanent=True)
            # Nothing can be shown: end the run rather than leave a call with no face.
            await self.push_frame(EndWorkerFrame(reason=message), FrameDirection.UPSTREAM)
            return
        self._pump = self.create_task(self._push_feed(self._feed), name="avatar-feed")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        if self._feed is not None and self._turns.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(END_WAIT_S):
                    await self._finished.wait()
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._close()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    async def _close(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            await self.cancel_task(pump)
        self._feed = None
        await self._source.aclose()

    # ------------------------------------------------------------------ frames in

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            await self._speak(frame)
            return  # its re-timed copy goes out with the frames it plays under
        if isinstance(frame, TTSStartedFrame):
            self._turns.begin(frame.context_id)
        elif isinstance(frame, TTSStoppedFrame):
            turn_id, passed = self._turns.stop(frame)
            if turn_id is not None:
                await self._control(lambda feed: feed.end_turn(turn_id))
            if passed is None:
                return  # passed on when the avatar has said the turn
            frame = passed
        elif isinstance(frame, (InterruptionFrame, UserStartedSpeakingFrame)):
            interrupted = self._turns.interrupt()
            if interrupted:
                await self._control(lambda feed: feed.interrupt())
            self._finished.set()
            await self.push_frame(frame, direction)
            feed, rest = self._feed, self._rest
            if interrupted and feed is not None and rest is not None and rest.picture is not None:
                # The face at rest now, after the transport has dropped what it queued, rather
                # than the last speaking picture until the avatar's next frame.
                await self.push_frame(picture_frame(feed.format, rest, rest.picture))
            return
        elif isinstance(frame, InputAudioRawFrame) and self._listen:
            user = frame  # the user's voice (passed on by the STT): the avatar shows it listens
            await self._control(lambda feed: feed.listen(user.audio, user.sample_rate, user.num_channels))
        await self.push_frame(frame, direction)

    async def _speak(self, frame: TTSAudioRawFrame) -> None:
        turn_id = self._turns.audio(frame.context_id)
        self._finished.clear()
        await self._control(
            lambda feed: feed.send_audio(frame.audio, frame.sample_rate, turn_id=turn_id, channels=frame.num_channels)
        )

    async def _control(self, send: Callable[[LiveFeed], Awaitable[None]]) -> None:
        feed = self._feed
        if feed is None:
            return
        try:
            await send(feed)
        except FeedUnavailable as error:  # the node is away; the feed reconnects by itself
            logger.debug(f"{self}: {error}")
        except AvatarError as error:
            await self.push_error(f"{self._source.describe}: {error}", exception=error)

    # ------------------------------------------------------------------ frames out

    async def _push_feed(self, feed: LiveFeed) -> None:
        try:
            async for item in feed:
                if isinstance(item, FeedFrame):
                    await self._push_frame(feed, item)
                elif isinstance(item, FeedTurn):
                    stopped = self._turns.seen(item)
                    if stopped is not None:
                        await self.push_frame(stopped)
                    self._check_finished()
                elif isinstance(item, FeedStatus):
                    if item.connected:
                        logger.info(f"{self}: {item.detail}")
                    else:
                        logger.warning(f"{self}: {item.detail}; retrying in {item.retry_in_s:g} s")
                        for stopped in self._turns.lost():
                            await self.push_frame(stopped)
                        self._check_finished()
                else:  # the node's counters and notices
                    logger.debug(f"{self}: {item}")
        except AvatarError as error:  # a refusal no retry fixes (the node now rejects the token)
            await self.push_error(f"{self._source.describe}: {error}", exception=error, force_treat_as_permanent=True)

    async def _push_frame(self, feed: LiveFeed, item: FeedFrame) -> None:
        fmt = feed.format
        kind = self._turns.kind(item)
        if kind is Kind.STALE:
            self.frames_withheld += 1
        elif item.picture is not None:
            await self.push_frame(picture_frame(fmt, item, item.picture))
            self.frames_pushed += 1
            if kind is Kind.IDLE:
                self._rest = item
        context = self._turns.context_of(self._turns.on_screen)
        await self.push_frame(audio_frame(fmt, item, kind is Kind.SPEECH, context))

    def _check_finished(self) -> None:
        if not self._turns.pending:
            self._finished.set()

