"""The parts of one stream, wired together; their start and their teardown.

Teardown waits for thread work a cancelled task left running (a step, an encode, the
engine stream being opened) before freeing what that work uses: a closed encoder or
engine stream must never be touched by a thread again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from avatar_node.engines.base import AvatarInputError, Engine, EngineStream, Identity, StreamOptions
from avatar_node.media.clock import MediaClock
from avatar_node.media.encoder import H264Encoder
from avatar_node.speech.tts import SpeechClip

from . import errors
from .board import FrameBoard
from .conditioning import ConditioningCutter
from .delivery import Delivery
from .ingest import SpeechIngest
from .listen import ListenTrack
from .options import SessionOptions
from .outbox import Outbox
from .pacer import LivePacer
from .renderer import Renderer
from .schedule import LiveSchedule, lead_frames
from .scheduler import StepScheduler
from .speech import SpeechQueue
from .stats import StreamCounters
from .threads import WorkPools

log = logging.getLogger(__name__)

#: Live: frames waiting for the consumer, in seconds (more only adds latency; then frames drop).
LIVE_OUTBOX_S = 0.2
#: Render: frames waiting for the consumer before rendering pauses.
RENDER_OUTBOX_S = 2.0


class StreamParts:
    def __init__(
        self,
        *,
        name: str,
        engine: Engine,
        scheduler: StepScheduler,
        pools: WorkPools,
        identity: Identity,
        options: SessionOptions,
        synthesize: Callable[[str, str], SpeechClip] | None,
        on_falling_behind: Callable[[float], None],
        hardware_encoder: bool = False,
    ) -> None:
        self.name = name
        self.engine = engine
        self.identity = identity
        self.options = options
        self.live = options.live
        self.scheduler = scheduler
        self.pools = pools
        info = engine.info
        self.clock = MediaClock.create(options.fps, options.clock_rate)
        self.speech = SpeechQueue(self.clock, info.audio_lookahead_ms)
        self.listen = ListenTrack(self.live)
        self.counters = StreamCounters()
        media_s = LIVE_OUTBOX_S if self.live else RENDER_OUTBOX_S
        self.outbox = Outbox(max(3, info.frames_per_step, round(media_s * options.fps)))
        self.encoder = (
            H264Encoder(
                options.width, options.height, options.fps, options.bitrate_kbps, options.keyframe_interval,
                prefer_hardware=hardware_encoder,
            )
            if options.video in ("h264", "both")
            else None
        )
        self.board = FrameBoard()
        self.schedule = LiveSchedule(options.fps)
        self.ingest = SpeechIngest(self.speech, options.clock_rate, self.run_ingest, synthesize)
        self.delivery = Delivery(
            self.clock, self.live, self.outbox, self.counters, self.encoder,
            keep_images=options.video in ("rgb", "both"), run_encode=self.run_encode,
        )
        self.renderer = Renderer(
            live=self.live, clock=self.clock, board=self.board, speech=self.speech,
            cutter=ConditioningCutter(self.clock, self.speech, self.listen), scheduler=scheduler,
            counters=self.counters, schedule=self.schedule, delivery=self.delivery, outbox=self.outbox,
            size=(options.width, options.height), lead=lead_frames(options.fps, info.frames_per_step),
            lookahead_s=info.audio_lookahead_ms / 1000, step_frames=self.step_frames,
        )
        self.renderer.prompt = options.prompt
        self.pacer = LivePacer(self.board, self.schedule, self.delivery, self.counters, on_falling_behind)
        self.codec_config = b""
        self._tasks: list[asyncio.Task[None]] = []
        self._opening: asyncio.Future[EngineStream] | None = None
        self._engine_stream: EngineStream | None = None
        self._encoding: asyncio.Future[Any] | None = None

    async def start(self, on_output_end: Callable[[], None], stats_every_s: float,
                    report_stats: Callable[[], None]) -> None:
        """Open the engine stream and the encoder; then frames start to flow."""
        o = self.options
        options = StreamOptions(o.width, o.height, o.fps, o.prompt, o.seed, o.framing)
        self._opening = asyncio.ensure_future(self.scheduler.run(self.engine.open, self.identity, options))
        try:
            self._engine_stream = await asyncio.shield(self._opening)
        except AvatarInputError as exc:  # options this engine cannot honour (its fps, framing...)
            raise errors.from_input_error(exc) from None
        self.renderer.engine_stream = self._engine_stream
        if self.encoder is not None:
            self.codec_config = await self.pools.run(self.pools.for_stream(self.live), self.encoder.probe_codec_config)
        self._spawn(self.renderer.run(), "renderer", then=None if self.live else on_output_end)
        if self.live:
            self._spawn(self.pacer.run(), "pacer", then=on_output_end)
        if stats_every_s:
            self._spawn(_every(stats_every_s, report_stats), "stats")

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str, then: Callable[[], None] | None = None) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except errors.PipelineError as exc:
                self.outbox.close(exc)
                return
            except Exception:
                log.exception("stream %s: %s failed", self.name, what)
                self.outbox.close(errors.internal())
                return
            if then is not None:
                then()

        self._tasks.append(asyncio.create_task(guarded(), name=f"{what}-{self.name}"))

    async def close(self) -> None:
        """Stop every task and free the engine stream and the encoder."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Thread work outlives a cancelled task: wait for it before freeing what it uses.
        pending = [f for f in (self.renderer.inflight, self._encoding, self._opening) if f is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        opening, self._opening = self._opening, None
        if opening is not None and opening.done() and not opening.cancelled() and opening.exception() is None:
            await self.scheduler.run(opening.result().close)
        if self.encoder is not None:
            self.encoder.close()

    def step_frames(self) -> int:
        assert self._engine_stream is not None
        return self._engine_stream.next_step_frames() or self.engine.info.frames_per_step

    async def run_ingest(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.pools.run(self.pools.ingest, fn, *args)

    async def run_encode(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._encoding = asyncio.ensure_future(self.pools.run(self.pools.for_stream(self.live), fn, *args))
        return await asyncio.shield(self._encoding)


async def _every(seconds: float, action: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(seconds)
        action()
