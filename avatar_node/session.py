"""One Converse session: input events in, paced frames and speech audio out, on one clock.

Two tasks run per session:
- the producer cuts speech into steps, asks the engine (through the scheduler) for
  frames, fits and encodes them, and hands them on with their audio;
- the sender (live only) releases frame k at t0 + k/fps. A render session emits as
  soon as a frame is encoded and waits when the client reads slowly.

Barge-in: an interrupt drops queued speech, discards frames generated ahead but not
yet sent, and regenerates from the next unsent frame (the next frame boundary), which
the encoder makes an IDR so no dropped frame is ever referenced.

Slow clients: the outbox is bounded. Live: a frame that does not fit is dropped with
its audio and counted, and dropping goes on until a keyframe (forced at once) fits.
Render: the producer waits.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import cv2
import numpy as np

from avatar_proto import avatar_pb2 as pb

from . import errors
from .engines.base import SPEECH_SAMPLE_RATE, Conditioning, Engine, EngineStream, Identity, StreamOptions
from .media.canvas import fit_into_canvas
from .media.clock import MediaClock
from .media.encoder import EncodedFrame, H264Encoder
from .scheduler import Scheduler
from .speech.tts import SpeechClip
from .speech_queue import FrameSpeech, ResamplerFactory, SpeechQueue, SpeechTurn, _Growable

log = logging.getLogger(__name__)

#: Most speech a session may have queued; more means the client is far ahead of 1x.
MAX_QUEUED_SPEECH_S = 600
#: Frames a live session renders ahead of the send schedule (its jitter buffer).
LIVE_LEAD_FRAMES = 3
#: Outbox bound, in media events (a frame is two: video + audio). ~2 s at 25 fps.
OUTBOX_MEDIA_LIMIT = 100
#: Live only: most listen audio kept waiting, so listening never lags far behind.
MAX_LISTEN_BACKLOG_S = 0.5


@dataclass(frozen=True)
class SessionSettings:
    width: int
    height: int
    fps: float
    clock_rate: int
    live: bool
    voice: str
    prompt: str
    bitrate_kbps: int
    keyframe_interval: int
    stats_interval_ms: int


@dataclass
class _FrameOut:
    index: int
    epoch: int
    encoded: EncodedFrame
    speech: FrameSpeech


class _Outbox:
    """Ordered server events; media respects a bound, control events always fit."""

    def __init__(self, media_limit: int) -> None:
        self._items: deque[pb.ServerEvent | None] = deque()
        self._media = 0
        self._limit = media_limit
        self._changed = asyncio.Event()

    def media_room(self, n: int) -> bool:
        return self._media + n <= self._limit

    def put(self, event: pb.ServerEvent | None) -> None:
        """None closes the stream."""
        self._items.append(event)
        if event is not None and event.WhichOneof("event") in ("video", "audio"):
            self._media += 1
        self._changed.set()

    async def wait_for_room(self, n: int) -> None:
        while not self.media_room(n):
            self._changed.clear()
            await self._changed.wait()

    async def get(self) -> pb.ServerEvent | None:
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        event = self._items.popleft()
        if event is not None and event.WhichOneof("event") in ("video", "audio"):
            self._media -= 1
        self._changed.set()
        return event


class _ListenTrack:
    """The user's voice at 16 kHz, consumed at 1x alongside the frames."""

    def __init__(self, make_resampler: ResamplerFactory, live: bool) -> None:
        self._make = make_resampler
        self._resampler = None
        self._rate = 0
        self._buffer = _Growable(np.float32)
        self._read = 0
        self._live = live

    def push(self, samples: np.ndarray, rate: int) -> None:
        if rate != self._rate:
            self._resampler = None if rate == SPEECH_SAMPLE_RATE else self._make(rate, SPEECH_SAMPLE_RATE)
            self._rate = rate
        out = self._resampler.process(samples) if self._resampler else samples
        self._buffer.append(out.astype(np.float32) / 32768.0)
        backlog = self._buffer.size - self._read
        limit = int(MAX_LISTEN_BACKLOG_S * SPEECH_SAMPLE_RATE)
        if self._live and backlog > limit:
            self._read = self._buffer.size - limit

    def take(self, span: int, length: int) -> np.ndarray:
        window = self._buffer.window(self._read, length)
        self._read = min(self._buffer.size, self._read + span)
        if self._read == self._buffer.size and self._buffer.size > 1 << 22:
            self._buffer, self._read = _Growable(np.float32), 0  # drop what was heard
        return window


@dataclass
class _Stats:
    frames_sent: int = 0
    frames_dropped: int = 0
    engine_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    encode_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    lag_ms: float = 0.0
    started: float = field(default_factory=time.monotonic)


class Session:
    def __init__(
        self,
        engine: Engine,
        scheduler: Scheduler,
        identity: Identity,
        settings: SessionSettings,
        make_resampler: ResamplerFactory,
        synthesize: Callable[[str, str], SpeechClip] | None,
        encoder_pool_run: Callable,  # type: ignore[type-arg]
    ) -> None:
        self.session_id = uuid.uuid4().hex[:16]
        self.engine = engine
        self.scheduler = scheduler
        self.identity = identity
        self.settings = settings
        self.clock = MediaClock.create(settings.fps, settings.clock_rate)
        info = engine.info
        self.speech = SpeechQueue(
            self.clock,
            info.audio_lookahead_ms,
            make_resampler,
            live=settings.live,
            prebuffer_ms=info.audio_lookahead_ms + 2 * round(1000 / settings.fps),
        )
        self.listen = _ListenTrack(make_resampler, settings.live)
        self._synthesize = synthesize
        self._run_encode = encoder_pool_run
        self.outbox = _Outbox(OUTBOX_MEDIA_LIMIT)
        self.stats = _Stats()
        self.encoder = H264Encoder(
            settings.width,
            settings.height,
            settings.fps,
            settings.bitrate_kbps,
            settings.keyframe_interval,
        )
        self.prompt = settings.prompt
        self._stream: EngineStream | None = None
        self._behaviours: list[str] = []
        self._epoch = 0
        self._next_gen = 0  # next frame index to generate
        self._next_send = 0  # next frame index to send
        self._ready: dict[int, _FrameOut] = {}
        self._wake = asyncio.Event()  # producer: input arrived or room freed
        self._frame_ready = asyncio.Event()  # sender: a frame was generated
        self._reset_speech = False
        self._ending = False
        self._produced_all = False
        self._drop_until_key = False
        self._inflight: asyncio.Future | None = None  # type: ignore[type-arg]
        self._encoding: asyncio.Future | None = None  # type: ignore[type-arg]
        self._inflight_epoch = -1  # epoch of the step being rendered, -1 when none
        self._speech_ahead_until = 0  # frames below this index that carry speech were rendered
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: errors.NodeError | None = None
        self._closed = False

    # ---------------------------------------------------------------- life cycle

    async def open(self) -> pb.SessionReady:
        options = StreamOptions(self.settings.width, self.settings.height, self.settings.fps, self.prompt)
        self._stream = await self.scheduler.run(self.engine.open, self.identity, options)
        s = self.settings
        return pb.SessionReady(
            session_id=self.session_id,
            engine=self.engine.info.name,
            avatar_id=self.identity.avatar_id,
            output=pb.OutputFormat(
                width=s.width,
                height=s.height,
                fps=s.fps,
                codec=pb.VIDEO_CODEC_H264,
                bitrate_kbps=self.encoder.bitrate_kbps,
                keyframe_interval=self.encoder.keyframe_interval,
                audio_sample_rate=s.clock_rate,
            ),
            clock_rate=s.clock_rate,
            codec_config=await self._run_encode(self.encoder.probe_codec_config),
            codec_string=self.encoder.codec_string,
            engine_lookahead_ms=self.engine.info.audio_lookahead_ms,
        )

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._guard(self._produce())))
        if self.settings.live:
            self._tasks.append(asyncio.create_task(self._guard(self._send_paced())))
        if self.settings.stats_interval_ms:
            self._tasks.append(asyncio.create_task(self._guard(self._report_stats())))

    async def _guard(self, coro) -> None:  # type: ignore[no-untyped-def]
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except errors.NodeError as exc:
            self.fail(exc)
        except Exception:
            log.exception("session %s failed", self.session_id)
            self.fail(errors.internal("the session failed inside the node; see the node's log"))

    def fail(self, error: errors.NodeError) -> None:
        if self.failure is None:
            self.failure = error
            self.outbox.put(None)

    async def events(self) -> AsyncIterator[pb.ServerEvent]:
        while True:
            event = await self.outbox.get()
            if event is None:
                return
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A cancelled task's thread work goes on: wait for it before freeing what it uses.
        pending = [f for f in (self._inflight, self._encoding) if f is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await self.scheduler.run(stream.close)
        self.encoder.close()

    # ---------------------------------------------------------------- input

    async def handle(self, event: pb.ClientEvent) -> None:
        """Apply one client event. Raises NodeError for input that ends the call."""
        from .media.audio import pcm_s16le_to_mono, validate_sample_rate

        kind = event.WhichOneof("event")
        if self._ending and kind not in ("control", "end"):
            raise errors.precondition(f"`{kind}` after `end`; start a new session to say more")
        if kind == "start":
            raise errors.precondition("the session has already started; send `start` once per call")
        if kind == "speech_audio":
            msg = event.speech_audio
            rate = validate_sample_rate(msg.sample_rate)
            samples = pcm_s16le_to_mono(msg.pcm, msg.channels or 1)
            self._check_queue_room(len(samples) / rate)
            turn, closed = self.speech.push_audio(samples, rate, msg.end_of_turn, msg.turn_id)
            if closed and turn is not None:
                self._emit_turn(turn, pb.TurnEvent.KIND_QUEUED)
            self._start_speech_now()
        elif kind == "text":
            if self._synthesize is None:
                raise errors.precondition("this node has no text-to-speech voice; send speech_audio")
            voice = event.text.voice or self.settings.voice
            clip: SpeechClip = await asyncio.get_running_loop().run_in_executor(
                None, self._synthesize, event.text.text, voice
            )
            self._check_queue_room(clip.duration_s)
            turn = self.speech.push_clip(clip.samples, clip.sample_rate, clip.phonemes, event.text.turn_id)
            self._emit_turn(turn, pb.TurnEvent.KIND_QUEUED)
            self._start_speech_now()
        elif kind == "listen_audio":
            msg = event.listen_audio
            rate = validate_sample_rate(msg.sample_rate)
            self.listen.push(pcm_s16le_to_mono(msg.pcm, msg.channels or 1), rate)
        elif kind == "control":
            self._control(event.control)
        elif kind == "end":
            self.finish(discard=event.end.discard_pending)
        else:
            raise errors.invalid("empty ClientEvent; set one of its fields")
        self._wake.set()

    def _check_queue_room(self, seconds: float) -> None:
        if self.speech.queued_ms / 1000 + seconds > MAX_QUEUED_SPEECH_S:
            raise errors.exhausted(
                f"more than {MAX_QUEUED_SPEECH_S} s of speech queued; send audio no faster than "
                "needed (about real time) or wait for turns to finish"
            )

    def _control(self, control: pb.Control) -> None:
        action = control.WhichOneof("action")
        if action == "interrupt":
            self.interrupt()
        elif action == "behaviour":
            name = control.behaviour.name.strip().lower()
            if name in self.engine.behaviours:
                self._behaviours.append(name)
            else:
                known = ", ".join(sorted(self.engine.behaviours)) or "none"
                self._notice("unknown_behaviour", f"behaviour {name!r} is not supported by engine "
                             f"{self.engine.info.name!r} (supported: {known})")
        elif action == "prompt":
            self.prompt = control.prompt.prompt
        else:
            raise errors.invalid("empty Control; set interrupt, behaviour or prompt")

    def _rewind(self) -> None:
        """Discard frames rendered ahead; rendering resumes at the next unsent frame."""
        self._epoch += 1
        self._ready.clear()
        self._next_gen = self._next_send
        self.encoder.force_keyframe()  # nothing may reference a discarded frame

    def _start_speech_now(self) -> None:
        """Live: new speech replaces idle frames rendered ahead, so it shows at the next frame.

        Only when every frame ahead is idle: frames carrying speech are never discarded
        (their audio was already taken from the queue)."""
        if self.settings.live and self._speech_ahead_until <= self._next_send and self.speech.startable_now():
            if self._next_gen > self._next_send or self._inflight_epoch == self._epoch:
                self._rewind()

    def interrupt(self) -> None:
        """Barge-in at the next frame boundary."""
        dropped = self.speech.clear()
        self._reset_speech = True
        if self.settings.live:
            self._rewind()
            self._speech_ahead_until = 0
        for turn in dropped:
            self._emit_turn(turn, pb.TurnEvent.KIND_FINISHED, interrupted=True)
        self._wake.set()

    def finish(self, discard: bool = False) -> None:
        """End after pending speech (or at once with discard)."""
        if discard:
            self.interrupt()
        else:
            # A turn still open is closed with what has arrived.
            turn = self.speech._open
            if turn is not None:
                self.speech._close(turn)
                self._emit_turn(turn, pb.TurnEvent.KIND_QUEUED)
        self._ending = True
        self._wake.set()

    # ---------------------------------------------------------------- output

    def _notice(self, code: str, message: str) -> None:
        self.outbox.put(pb.ServerEvent(notice=pb.Notice(code=code, message=message)))

    def _emit_turn(self, turn: SpeechTurn, kind: int, interrupted: bool = False, pts: int = 0) -> None:
        rate = self.clock.clock_rate
        self.outbox.put(
            pb.ServerEvent(
                turn=pb.TurnEvent(
                    turn_id=turn.turn_id,
                    kind=kind,  # type: ignore[arg-type]
                    pts=pts if kind != pb.TurnEvent.KIND_FINISHED else (turn.start_pts or 0) + turn.played,
                    interrupted=interrupted,
                    played_ms=turn.played * 1000 // rate,
                    duration_ms=turn.duration_samples * 1000 // rate if turn.closed else 0,
                )
            )
        )

    def _stats_event(self) -> pb.ServerEvent:
        st = self.stats
        elapsed = max(1e-6, time.monotonic() - st.started)
        return pb.ServerEvent(
            stats=pb.SessionStats(
                frames_sent=st.frames_sent,
                frames_dropped=st.frames_dropped,
                speech_underruns=self.speech.underruns,
                av_offset_ms=0.0,  # audio and video of a frame share one pts by construction
                realtime_factor=self.clock.seconds(self._next_send) / elapsed,
                engine_ms_p50=statistics.median(st.engine_ms) if st.engine_ms else 0.0,
                encode_ms_p50=statistics.median(st.encode_ms) if st.encode_ms else 0.0,
                queued_speech_ms=self.speech.queued_ms,
                lag_ms=st.lag_ms,
            )
        )

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval_ms / 1000)
            self.outbox.put(self._stats_event())

    def _emit_frame(self, frame: _FrameOut) -> None:
        """Hand one frame (video + its audio) to the client, with its turn events."""
        pts = self.clock.pts(frame.index)
        speech = frame.speech
        turn = speech.turn
        if turn is not None and turn.start_pts is None and not speech.underrun:
            turn.start_pts = pts
            self._emit_turn(turn, pb.TurnEvent.KIND_STARTED, pts=pts)
        if self.settings.live and (not self.outbox.media_room(2) or (self._drop_until_key and not frame.encoded.keyframe)):
            # Slow reader: drop this frame with its audio; resume at a keyframe.
            if not self._drop_until_key:
                self.encoder.force_keyframe()
            self._drop_until_key = True
            self.stats.frames_dropped += 1
        else:
            self._drop_until_key = False
            self.outbox.put(
                pb.ServerEvent(
                    video=pb.VideoPacket(
                        data=frame.encoded.data,
                        pts=pts,
                        duration=self.clock.frame_ticks(frame.index),
                        keyframe=frame.encoded.keyframe,
                        frame_index=frame.index,
                        speaking=turn is not None and not speech.underrun,
                    )
                )
            )
            self.outbox.put(
                pb.ServerEvent(
                    audio=pb.AudioPacket(pcm=speech.audio.tobytes(), pts=pts, sample_rate=self.clock.clock_rate)
                )
            )
            self.stats.frames_sent += 1
        if turn is not None:
            turn.played += speech.speech_samples
            if speech.ends_turn:
                self._emit_turn(turn, pb.TurnEvent.KIND_FINISHED)
        self._next_send = frame.index + 1

    def _end_stream(self) -> None:
        self.outbox.put(self._stats_event())
        self.outbox.put(
            pb.ServerEvent(
                ended=pb.SessionEnded(
                    reason="end", frames=self._next_send, last_pts=self.clock.pts(self._next_send)
                )
            )
        )
        self.outbox.put(None)

    # ---------------------------------------------------------------- producer

    async def _wait(self) -> None:
        self._wake.clear()
        await self._wake.wait()

    async def _produce(self) -> None:
        assert self._stream is not None
        per_step = self.engine.info.frames_per_step
        live = self.settings.live
        while True:
            if self._ending and self.speech.idle:
                break
            if live:
                if self._next_gen >= self._next_send + max(LIVE_LEAD_FRAMES, per_step):
                    await self._wait()
                    continue
            else:
                if self.speech.idle or not self.speech.ready():
                    await self._wait()  # render: the timeline moves only with speech
                    continue
                if not self.outbox.media_room(2 * per_step):
                    await self.outbox.wait_for_room(2 * per_step)
            await self._produce_step(per_step)
        self._produced_all = True
        if live:
            self._frame_ready.set()
        else:
            self._end_stream()

    async def _produce_step(self, count: int) -> None:
        assert self._stream is not None
        epoch, first = self._epoch, self._next_gen
        if self._reset_speech:
            self._reset_speech = False
            await self.scheduler.run(self._stream.reset_speech)
        step = self.speech.take_step(first, count)
        span = self.clock.samples_at(first + count, SPEECH_SAMPLE_RATE) - self.clock.samples_at(
            first, SPEECH_SAMPLE_RATE
        )
        cond = Conditioning(
            speech=step.engine_audio,
            speaking=[f.turn is not None and not f.underrun for f in step.frames],
            listen=self.listen.take(span, len(step.engine_audio)),
            phonemes=step.phonemes,
            behaviours=tuple(self._behaviours),
            prompt=self.prompt,
            frame_index=first,
        )
        self._behaviours.clear()
        if any(f.turn is not None for f in step.frames):
            self._speech_ahead_until = first + count
        t = time.perf_counter()
        self._inflight = asyncio.ensure_future(self.scheduler.step(self._stream, cond))
        self._inflight_epoch = epoch
        try:
            frames = await asyncio.shield(self._inflight)
        finally:
            self._inflight_epoch = -1
        self.stats.engine_ms.append((time.perf_counter() - t) * 1000 / max(1, len(frames)))
        if epoch != self._epoch:
            return  # interrupted while rendering: these frames are stale
        t = time.perf_counter()
        self._encoding = asyncio.ensure_future(self._run_encode(self._encode_all, frames))
        encoded = await asyncio.shield(self._encoding)
        self.stats.encode_ms.append((time.perf_counter() - t) * 1000 / max(1, len(frames)))
        if epoch != self._epoch:
            self.encoder.force_keyframe()
            return
        for k, (enc, fs) in enumerate(zip(encoded, step.frames)):
            out = _FrameOut(first + k, epoch, enc, fs)
            if self.settings.live:
                self._ready[out.index] = out
            else:
                self._emit_frame(out)
        self._next_gen = first + count
        self._frame_ready.set()

    def _encode_all(self, frames: list[np.ndarray]) -> list[EncodedFrame]:
        w, h = self.settings.width, self.settings.height
        out = []
        for frame in frames:
            if frame.shape[0] != h or frame.shape[1] != w:
                frame, _ = fit_into_canvas(frame, w, h)
            out.append(self.encoder.encode(frame))
        return out

    # ---------------------------------------------------------------- live pacing

    async def _send_paced(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.clock.frame_seconds
        t0: float | None = None
        while True:
            index = self._next_send
            frame = self._ready.pop(index, None)
            if frame is None:
                if self._produced_all and not self._ready:
                    break
                self._frame_ready.clear()
                await self._frame_ready.wait()
                continue
            now = loop.time()
            if t0 is None:
                t0 = now - index * period  # the first frame goes out as soon as it exists
            deadline = t0 + index * period
            if deadline > now:
                await asyncio.sleep(deadline - now)
            else:
                lag = now - deadline
                self.stats.lag_ms = lag * 1000
                if lag > 0.25:
                    t0 += lag  # the engine fell behind: resume 1x from here, don't burst
            if frame.epoch != self._epoch:
                continue  # an interrupt discarded it while it waited for its slot
            self._emit_frame(frame)
            self._wake.set()
        self._end_stream()
