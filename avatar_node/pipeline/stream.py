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
from collections.abc import Callable

import numpy as np

from avatar_node.engines.base import Engine, Identity
from avatar_node.speech.tts import SpeechClip

from . import errors
from .assembly import StreamParts
from .ingest import INLINE_BYTES, ParsedAudio, parse_pcm
from .items import Ended, EndReason, Notice, NoticeCode, Stats, StreamItem, TurnKind
from .options import MAX_NAME_CHARS, MAX_PROMPT_CHARS, SessionOptions, check_voice
from .scheduler import StepScheduler
from .threads import WorkPools

log = logging.getLogger(__name__)

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
        on_closed: Callable[[AvatarStream], None],
        hardware_encoder: bool = False,
    ) -> None:
        self.session_id = uuid.uuid4().hex[:16]
        self.engine = engine
        self.identity = identity
        self.options = options
        self.live = options.live
        self.parts = StreamParts(
            name=self.session_id, engine=engine, scheduler=scheduler, pools=pools, identity=identity,
            options=options, synthesize=synthesize, on_falling_behind=self._falling_behind,
            hardware_encoder=hardware_encoder,
        )
        self.clock = self.parts.clock
        self.encoder = self.parts.encoder
        self.counters = self.parts.counters
        self._resolve_voice = resolve_voice
        self._on_closed = on_closed
        self.falling_behind_until = 0.0
        self.end_reason: EndReason | None = None
        self._input_ended = False
        self._input_lock = asyncio.Lock()
        self._ended_sent = False
        self._noticed: set[NoticeCode] = set()
        self._teardown: asyncio.Future[None] | None = None

    @property
    def codec_config(self) -> bytes:
        """H.264 SPS and PPS (Annex B), once started."""
        return self.parts.codec_config

    @property
    def closed(self) -> bool:
        return self._teardown is not None

    async def start(self) -> None:
        await self.parts.start(self._end_output, self.options.stats_interval_ms / 1000, self._report_stats)
        for note in self.identity.notes:  # said once per session, where its user will read it
            self.parts.outbox.put(Notice(NoticeCode.AVATAR_ADVICE, note))

    async def aclose(self, reason: EndReason = EndReason.CLIENT_CANCELLED) -> None:
        """Stop now and return every resource. Idempotent; safe to cancel (the teardown finishes anyway).

        `reason` is recorded unless the stream had already ended its output on its own."""
        if self._teardown is None:
            if not self._ended_sent or self.end_reason is None:
                self.end_reason = reason
            self._teardown = asyncio.ensure_future(self._close())
        await asyncio.shield(self._teardown)

    async def _close(self) -> None:
        try:
            await self.parts.close()
        except Exception:
            log.exception("stream %s: closing failed", self.session_id)
        finally:
            self.parts.outbox.close()
            self._on_closed(self)

    # ------------------------------------------------------------------ input

    def _check_open(self, what: str) -> None:
        if self._input_ended or self.closed:
            raise errors.precondition("AFTER_END", f"`{what}` after `end`; start a new session to say more")

    def _check_turn_room(self) -> None:
        if self.parts.speech.queued_turns >= MAX_QUEUED_TURNS:
            raise errors.exhausted("TOO_MANY_TURNS", f"more than {MAX_QUEUED_TURNS} turns queued; "
                                   "wait for turns to finish before sending more")

    async def push_speech(
        self, pcm: bytes | np.ndarray, sample_rate: int, channels: int = 1, end_of_turn: bool = False,
        turn_id: str = "",
    ) -> None:
        """Speech for the avatar to say (s16le bytes, or int16/float32 samples at any rate);
        consecutive calls form one turn until `end_of_turn`."""
        self._check_open("speech_audio")
        _check_name("turn_id", turn_id)
        async with self._input_lock:
            self._check_turn_room()
            loop_time = asyncio.get_running_loop().time
            closed = await self.parts.ingest.push_audio(pcm, sample_rate, channels, end_of_turn, turn_id, loop_time)
            if closed is not None:
                self.parts.delivery.turn(closed, TurnKind.QUEUED)
        self.parts.board.wake_renderer()

    async def say(self, text: str, voice: str = "", turn_id: str = "") -> None:
        """Text for the avatar to speak with the node's voice, queued as one turn."""
        self._check_open("text")
        _check_name("turn_id", turn_id)
        voice = check_voice(voice, self._resolve_voice) if voice else self.options.voice
        async with self._input_lock:
            self._check_turn_room()
            turn = await self.parts.ingest.push_text(text, voice, turn_id)
            self.parts.delivery.turn(turn, TurnKind.QUEUED)
        self.parts.board.wake_renderer()

    async def push_listen(self, pcm: bytes | np.ndarray, sample_rate: int, channels: int = 1) -> None:
        """The user's voice, so the avatar shows it is listening."""
        self._check_open("listen_audio")
        size = pcm.nbytes if isinstance(pcm, np.ndarray) else len(pcm)
        if size > INLINE_BYTES:
            parsed: ParsedAudio = await self.parts.run_ingest(parse_pcm, pcm, sample_rate, channels)
        else:
            parsed = parse_pcm(pcm, sample_rate, channels)
        if self.parts.listen.push(parsed.samples, parsed.rate):
            self._notice_once(NoticeCode.LISTEN_AUDIO_DROPPED, "listen audio arrives faster than it is heard; "
                              "the oldest was dropped (send it at the pace it is recorded)")

    def interrupt(self) -> None:
        """Barge-in: stop speaking at the next frame, drop queued speech, discard frames rendered ahead."""
        parts = self.parts
        dropped = parts.speech.clear()
        parts.board.rewind()
        parts.renderer.reset_pending = True
        parts.delivery.force_keyframe()  # the next frame delivered is an IDR
        delivering = parts.delivery.delivering
        for turn in dropped:
            if delivering is not None and delivering.speech.turn is turn:
                turn.interrupted = True  # finished once its frame on the way is delivered
            else:
                parts.delivery.turn(turn, TurnKind.FINISHED, interrupted=True)

    def behaviour(self, name: str) -> None:
        """A short behaviour ("nod", "smile", "blink"...); an unknown one is reported in a Notice."""
        name = name.strip().lower()
        if name in self.engine.behaviours:
            if len(self.parts.renderer.behaviours) < MAX_BEHAVIOURS_PER_STEP:
                self.parts.renderer.behaviours.append(name)
            return
        shown = name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..."
        known = ", ".join(sorted(self.engine.behaviours)) or "none"
        self.parts.outbox.put(Notice(NoticeCode.UNKNOWN_BEHAVIOUR, f"behaviour {shown!r} is not supported by "
                                     f"engine {self.engine.info.name!r} (supported: {known})"))

    def set_prompt(self, prompt: str) -> None:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise errors.invalid("PROMPT_TOO_LONG", f"the prompt has {len(prompt)} characters; "
                                 f"keep it under {MAX_PROMPT_CHARS}")
        self.parts.renderer.prompt = prompt

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
                turn = await self.parts.ingest.close_open_turn()
                if turn is not None:
                    self.parts.delivery.turn(turn, TurnKind.QUEUED)
        self._finish()

    def fail(self, error: errors.PipelineError) -> None:
        """End the output with `error` after what is already queued (bad input on the consumer's side)."""
        self.parts.outbox.close(error)

    def begin_drain(self) -> None:
        """The node is shutting down: end once queued speech (and a turn being streamed) has played."""
        self.end_reason = EndReason.NODE_SHUTDOWN
        self._notice_once(NoticeCode.DRAINING, "the node is shutting down; this session ends after its queued speech")
        self._finish()

    def force_end(self) -> None:
        """End now, dropping queued speech (the drain's grace period ran out)."""
        self.end_reason = EndReason.NODE_SHUTDOWN
        self._input_ended = True
        self.interrupt()
        self._finish()

    def _finish(self) -> None:
        self.parts.renderer.finishing = True
        self.parts.board.wake_renderer()

    # ------------------------------------------------------------------ output

    def __aiter__(self) -> AvatarStream:
        return self

    async def __anext__(self) -> StreamItem:
        return await self.parts.outbox.get()

    def stats(self) -> Stats:
        parts = self.parts
        return self.counters.snapshot(self.clock.seconds(parts.board.next_send), parts.speech.underruns,
                                      parts.speech.queued_ms)

    def _report_stats(self) -> None:
        self.parts.outbox.put(self.stats())

    def _end_output(self) -> None:
        if self._ended_sent:
            return
        self._ended_sent = True
        outbox = self.parts.outbox
        outbox.put(self.stats())
        frames = self.parts.board.next_send
        outbox.put(Ended(self.end_reason or EndReason.END_REQUESTED, frames, self.clock.pts(frames)))
        outbox.close()

    def _falling_behind(self, now: float) -> None:
        self.falling_behind_until = now + 10.0

    def _notice_once(self, code: NoticeCode, message: str) -> None:
        if code not in self._noticed:
            self._noticed.add(code)
            self.parts.outbox.put(Notice(code, message))


def _check_name(field: str, value: str) -> None:
    if len(value) > MAX_NAME_CHARS:
        raise errors.invalid("NAME_TOO_LONG", f"`{field}` is {len(value)} characters long; keep it "
                                              f"under {MAX_NAME_CHARS}")
