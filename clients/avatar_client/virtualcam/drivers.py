"""What makes the avatar speak: a sentence or a file for demos, or the user's own microphone
(puppet mode). Agents drive it through the control endpoint (control.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import numpy as np

from ..voice_gate import VoiceGate
from .playout import monotonic
from .sources import FrameSource, NotConnected, TurnFinished
from .status import Meters


class Turns:
    """Names the turns this process sends and lets callers wait for one to finish."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[TurnFinished]] = {}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def expect(self, turn_id: str) -> asyncio.Future[TurnFinished]:
        future: asyncio.Future[TurnFinished] = asyncio.get_running_loop().create_future()
        self._waiters[turn_id] = future
        return future

    def finished(self, event: TurnFinished) -> None:
        future = self._waiters.pop(event.turn_id, None)
        if future is not None and not future.done():
            future.set_result(event)

    def lost(self, reason: str) -> None:
        """The session went away: nothing queued on it will finish."""
        waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            if not future.done():
                future.set_exception(NotConnected(reason))


async def speak_once(
    source: FrameSource,
    connected: asyncio.Event,
    turns: Turns,
    meters: Meters,
    log: Callable[[str], None],
    text: str | None = None,
    audio: tuple[np.ndarray, int] | None = None,
) -> TurnFinished:
    """Say `text` (or play `audio` = (samples, rate)) once it can be heard; if the node goes
    away before the turn finishes, say it again when it is back."""
    while True:
        await connected.wait()
        turn_id = turns.new_id("say" if text is not None else "speak")
        finished = turns.expect(turn_id)
        meters.speech_sent(turn_id, monotonic())
        try:
            if text is not None:
                await source.say(text, turn_id=turn_id)
            elif audio is not None:
                await source.send_speech(audio[0], audio[1], end_of_turn=True, turn_id=turn_id)
            return await finished
        except NotConnected:
            log("the node went away before the speech was heard; it will be said again once the node is back")
            await asyncio.sleep(0.1)


class PuppetDriver:
    """The user's microphone drives the avatar.

    Speech is cut into turns at pauses (the shared voice gate) and streamed to the source. A
    turn opens with the gate's pre-roll, the audio before the voice began, sent at once: word onsets are kept, and
    the node starts the turn with enough in hand (its look-ahead, the frames it renders ahead,
    network jitter) never to run short mid-sentence. The node sends the user's voice back with the frames
    it animates, so the virtual microphone plays it delayed by exactly the avatar's latency and
    lips and voice match by construction. Each turn starts fresh, so the delay cannot creep up
    over a long meeting.
    """

    def __init__(
        self,
        source: FrameSource,
        turns: Turns,
        meters: Meters,
        rate: int,
        gate: VoiceGate | None = None,
    ) -> None:
        self._source = source
        self._turns = turns
        self._meters = meters
        self._rate = rate
        self._gate = gate or VoiceGate()
        self._queue: asyncio.Queue[tuple[np.ndarray, float]] = asyncio.Queue(maxsize=500)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.turns_sent = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_chunk(self, samples: np.ndarray, spoken_at: float) -> None:
        """Called from the capture thread."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._enqueue, samples, spoken_at)
            except RuntimeError:
                pass  # the loop closed meanwhile: the command is ending

    def _enqueue(self, samples: np.ndarray, spoken_at: float) -> None:
        if not self._queue.full():  # the loop was blocked for 10 s: drop rather than grow
            self._queue.put_nowait((samples, spoken_at))

    async def run(self) -> None:
        turn_id: str | None = None
        while True:
            samples, spoken_at = await self._queue.get()
            step = self._gate.feed(samples, self._rate, at=spoken_at)
            try:
                if step.opens:
                    turn_id = self._turns.new_id("puppet")
                    self._meters.speech_sent(turn_id, step.heard_at)
                    self.turns_sent += 1
                if turn_id is None or not step.chunks:
                    continue
                pcm = np.concatenate(step.chunks)
                await self._source.send_speech(pcm, self._rate, end_of_turn=step.closes, turn_id=turn_id)
                if step.closes:
                    turn_id = None
            except NotConnected:
                turn_id = None  # the node is away: this speech is lost; start afresh when it returns
                self._gate.reset()
