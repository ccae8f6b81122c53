"""One avatar stream: speech, text, listening and controls in; frames with their audio out.

Made by `AvatarRuntime.open_stream`. Input methods raise `PipelineError` for bad input
(the stream carries on); output is read with `async for item in stream`. Close with
`aclose()`: it is idempotent and cancellation-safe (the teardown runs to its end even
if the caller is cancelled), and it returns every resource the stream holds.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable, Coroutine

import numpy as np

from avatar_node.engines.base import Engine, EngineStream, Identity, StreamOptions
from avatar_node.media.clock import MediaClock
from avatar_node.media.encoder import H264Encoder
from avatar_node.speech.tts import SpeechClip

from . import errors
from .board import FrameBoard
from .conditioning import ConditioningCutter
from .delivery import Delivery
from .ingest import INLINE_BYTES, SpeechIngest, parse_pcm
from .items import Ended, EndReason, Notice, NoticeCode, Stats, StreamItem, TurnKind
from .listen import ListenTrack
from .options import MAX_NAME_CHARS, MAX_PROMPT_CHARS, SessionOptions, check_voice
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
MAX_QUEUED_TURNS = 1000
MAX_BEHAVIOURS_PER_STEP = 8


class AvatarStream:
    def __init__(
        self,
        *,
        engine: Engine,
        scheduler: StepScheduler,
        pools: WorkPools,
        identity: Identity,
        options: SessionOptions,
        synthesize: Callable[[str, str], SpeechClip] | None,
        resolve_voice: Callable[[str], str] | None,
        on_closed: Callable[["AvatarStream"], None],
    ) -> None:
        self.session_id = uuid.uuid4().hex[:16]
        self.engine = engine
        self.identity = identity
        self.options = options
        self.live = options.live
        self.clock = MediaClock.create(options.fps, options.clock_rate)
        self._scheduler = scheduler
        self._pools = pools
        self._resolve_voice = resolve_voice
        self._on_closed = on_closed
        info = engine.info
        self.speech = SpeechQueue(self.clock, info.audio_lookahead_ms)
        self.listen = ListenTrack(self.live)
        self.counters = StreamCounters()
        media_s = LIVE_OUTBOX_S if self.live else RENDER_OUTBOX_S
        self.outbox = Outbox(max(3, info.frames_per_step, round(media_s * options.fps)))
        self.encoder = (
            H264Encoder(options.width, options.height, options.fps, options.bitrate_kbps, options.keyframe_interval)
            if options.video in ("h264", "both")
            else None
        )
        self.board = FrameBoard()
        self.schedule = LiveSchedule(options.fps)
        self._ingest = SpeechIngest(self.speech, options.clock_rate, self._run_ingest, synthesize)
        self.delivery = Delivery(
            self.clock, self.live, self.outbox, self.counters, self.encoder,
            keep_images=options.video in ("rgb", "both"), run_encode=self._run_encode,
        )
        self.renderer = Renderer(
            live=self.live, clock=self.clock, board=self.board, speech=self.speech,
            cutter=ConditioningCutter(self.clock, self.speech, self.listen), scheduler=scheduler,
            counters=self.counters, schedule=self.schedule, delivery=self.delivery, outbox=self.outbox,
            size=(options.width, options.height), lead=lead_frames(options.fps, info.frames_per_step),
            lookahead_s=info.audio_lookahead_ms / 1000, step_frames=self._step_frames,
        )
        self.renderer.prompt = options.prompt
        self.pacer = LivePacer(self.board, self.schedule, self.delivery, self.counters, self._falling_behind)
        self.codec_config = b""
        self.falling_behind_until = 0.0
        self.end_reason: EndReason | None = None
        self._input_ended = False
        self._input_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._opening: asyncio.Future[Any] | None = None
        self._engine_stream: EngineStream | None = None
        self._encoding: asyncio.Future[Any] | None = None
        self._ended_sent = False
        self._noticed: set[NoticeCode] = set()
        self._teardown: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ life cycle

    @property
    def closed(self) -> bool:
        return self._teardown is not None

    async def start(self) -> None:
        """Open the engine stream and the encoder; then frames start to flow."""
        options = StreamOptions(self.options.width, self.options.height, self.options.fps, self.options.prompt,
                                self.options.seed, self.options.framing)
        self._opening = asyncio.ensure_future(self._scheduler.run(self.engine.open, self.identity, options))
        self._engine_stream = await asyncio.shield(self._opening)
        self.renderer.engine_stream = self._engine_stream
        if self.encoder is not None:
            self.codec_config = await self._pools.run(self._pools.for_stream(self.live), self.encoder.probe_codec_config)
        self._spawn(self.renderer.run(), "renderer", then=None if self.live else self._end_output)
        if self.live:
            self._spawn(self.pacer.run(), "pacer", then=self._end_output)
        if self.options.stats_interval_ms:
            self._spawn(self._report_stats(), "stats")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str, then: Callable[[], None] | None = None) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except errors.PipelineError as exc:
                self.outbox.close(exc)
                return
            except Exception:
                log.exception("stream %s: %s failed", self.session_id, name)
                self.outbox.close(errors.internal())
                return
            if then is not None:
                then()

        self._tasks.append(asyncio.create_task(guarded(), name=f"{name}-{self.session_id}"))

    async def aclose(self, reason: EndReason = EndReason.CLIENT_CANCELLED) -> None:
        """Stop now and return every resource. Idempotent; safe to cancel (the teardown finishes anyway)."""
        if self._teardown is None:
            if self.end_reason is None:
                self.end_reason = reason
            self._teardown = asyncio.ensure_future(self._close())
        await asyncio.shield(self._teardown)

    async def _close(self) -> None:
        try:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            # Thread work outlives a cancelled task: wait for it before freeing what it uses.
            pending = [f for f in (self.renderer.inflight, self._encoding, self._opening) if f is not None]
            await asyncio.gather(*pending, return_exceptions=True)
            if self._opening is not None and self._opening.done() and not self._opening.exception():
                stream = self._opening.result()
                self._opening = None
                await self._scheduler.run(stream.close)
            if self.encoder is not None:
                self.encoder.close()
        except Exception:
            log.exception("stream %s: closing failed", self.session_id)
        finally:
            self.outbox.close()
            self._on_closed(self)

    # ------------------------------------------------------------------ input

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _check_open(self, what: str) -> None:
        if self._input_ended or self.closed:
            raise errors.precondition("AFTER_END", f"`{what}` after `end`; start a new session to say more")

    async def push_speech(
        self, pcm: bytes | np.ndarray, sample_rate: int, channels: int = 1, end_of_turn: bool = False,
        turn_id: str = "",
    ) -> None:
        """Speech for the avatar to say; consecutive calls form one turn until `end_of_turn`."""
        self._check_open("speech_audio")
        _check_name("turn_id", turn_id)
        async with self._input_lock:
            if self._queued_turns() >= MAX_QUEUED_TURNS:
                raise errors.exhausted("TOO_MANY_TURNS", f"more than {MAX_QUEUED_TURNS} turns queued; "
                                       "wait for turns to finish before sending more")
            closed = await self._ingest.push_audio(pcm, sample_rate, channels, end_of_turn, turn_id, self._loop_time)
            if closed is not None:
                self.delivery.turn(closed, TurnKind.QUEUED)
        self.board.wake_renderer()

    async def say(self, text: str, voice: str = "", turn_id: str = "") -> None:
        """Text for the avatar to speak with the node's voice, queued as one turn."""
        self._check_open("text")
        _check_name("turn_id", turn_id)
        voice = check_voice(voice, self._resolve_voice) if voice else self.options.voice
        async with self._input_lock:
            if self._queued_turns() >= MAX_QUEUED_TURNS:
                raise errors.exhausted("TOO_MANY_TURNS", f"more than {MAX_QUEUED_TURNS} turns queued; "
                                       "wait for turns to finish before sending more")
            turn = await self._ingest.push_text(text, voice, turn_id)
            self.delivery.turn(turn, TurnKind.QUEUED)
        self.board.wake_renderer()

    async def push_listen(self, pcm: bytes | np.ndarray, sample_rate: int, channels: int = 1) -> None:
        """The user's voice, so the avatar shows it is listening."""
        self._check_open("listen_audio")
        size = pcm.nbytes if isinstance(pcm, np.ndarray) else len(pcm)
        parsed = (await self._run_ingest(parse_pcm, pcm, sample_rate, channels) if size > INLINE_BYTES
                  else parse_pcm(pcm, sample_rate, channels))
        if self.listen.push(parsed.samples, parsed.rate):
            self._notice_once(NoticeCode.LISTEN_AUDIO_DROPPED, "listen audio arrives faster than it is heard; "
                              "the oldest was dropped (send it at the pace it is recorded)")

    def interrupt(self) -> None:
        """Barge-in: stop speaking at the next frame, drop queued speech, discard frames rendered ahead."""
        dropped = self.speech.clear()
        self.board.rewind()
        self.renderer.reset_pending = True
        self.delivery.force_keyframe()  # the next frame delivered is an IDR
        delivering = self.delivery.delivering
        for turn in dropped:
            if delivering is not None and delivering.speech.turn is turn:
                turn.interrupted = True  # finished once its frame in flight is delivered
            else:
                self.delivery.turn(turn, TurnKind.FINISHED, interrupted=True)

    def behaviour(self, name: str) -> None:
        """A short behaviour ("nod", "smile", "blink"...); an unknown one is reported in a Notice."""
        name = name.strip().lower()
        if name in self.engine.behaviours:
            if len(self.renderer.behaviours) < MAX_BEHAVIOURS_PER_STEP:
                self.renderer.behaviours.append(name)
            return
        shown = name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..."
        known = ", ".join(sorted(self.engine.behaviours)) or "none"
        self.outbox.put(Notice(NoticeCode.UNKNOWN_BEHAVIOUR, f"behaviour {shown!r} is not supported by engine "
                               f"{self.engine.info.name!r} (supported: {known})"))

    def set_prompt(self, prompt: str) -> None:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise errors.invalid("PROMPT_TOO_LONG", f"the prompt has {len(prompt)} characters; "
                                 f"keep it under {MAX_PROMPT_CHARS}")
        self.renderer.prompt = prompt

    async def end(self, discard_pending: bool = False, reason: EndReason = EndReason.END_REQUESTED) -> None:
        """No more input: end after the queued speech (or at once with `discard_pending`)."""
        if self._input_ended:
            return
        self._input_ended = True
        if self.end_reason is None:
            self.end_reason = reason
        if discard_pending:
            self.interrupt()
        else:
            async with self._input_lock:
                turn = await self._ingest.close_open_turn(self._loop_time)
                if turn is not None:
                    self.delivery.turn(turn, TurnKind.QUEUED)
        self.renderer.finishing = True
        self.board.wake_renderer()

    def fail(self, error: errors.PipelineError) -> None:
        """End the output with `error` after what is already queued (bad input from the consumer's side)."""
        self.outbox.close(error)

    def begin_drain(self) -> None:
        """The node is shutting down: end once queued speech (and a turn being streamed) has played."""
        self.end_reason = EndReason.NODE_SHUTDOWN
        self._notice_once(NoticeCode.DRAINING, "the node is shutting down; this session ends after its queued speech")
        self.renderer.finishing = True
        self.board.wake_renderer()

    def force_end(self) -> None:
        """End now, dropping queued speech (the drain's grace period ran out)."""
        self.end_reason = EndReason.NODE_SHUTDOWN
        self._input_ended = True
        self.interrupt()
        self.renderer.finishing = True
        self.board.wake_renderer()

    # ------------------------------------------------------------------ output

    def __aiter__(self) -> "AvatarStream":
        return self

    async def __anext__(self) -> StreamItem:
        return await self.outbox.get()

    def _end_output(self) -> None:
        if self._ended_sent:
            return
        self._ended_sent = True
        self.outbox.put(self.stats())
        frames = self.board.next_send
        self.outbox.put(Ended(self.end_reason or EndReason.END_REQUESTED, frames, self.clock.pts(frames)))
        self.outbox.close()

    def stats(self) -> Stats:
        return self.counters.snapshot(self.clock.seconds(self.board.next_send), self.speech.underruns,
                                      self.speech.queued_ms)

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(self.options.stats_interval_ms / 1000)
            self.outbox.put(self.stats())

    # ------------------------------------------------------------------ helpers

    def _step_frames(self) -> int:
        assert self._engine_stream is not None
        return self._engine_stream.next_step_frames() or self.engine.info.frames_per_step

    def _queued_turns(self) -> int:
        return self.speech.queued_turns

    def _falling_behind(self, now: float) -> None:
        self.falling_behind_until = now + 10.0

    def _notice_once(self, code: NoticeCode, message: str) -> None:
        if code not in self._noticed:
            self._noticed.add(code)
            self.outbox.put(Notice(code, message))

    async def _run_ingest(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._pools.run(self._pools.ingest, fn, *args)

    async def _run_encode(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._encoding = asyncio.ensure_future(self._pools.run(self._pools.for_stream(self.live), fn, *args))
        return await asyncio.shield(self._encoding)


def _check_name(field: str, value: str) -> None:
    if len(value) > MAX_NAME_CHARS:
        raise errors.invalid("NAME_TOO_LONG", f"`{field}` is {len(value)} characters long; keep it under {MAX_NAME_CHARS}")

