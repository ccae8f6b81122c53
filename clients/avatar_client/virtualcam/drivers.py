"""What makes the avatar speak: a sentence or a file for demos, or the user's own microphone
(puppet mode). Agents drive it through the control endpoint (control.py)."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable

import numpy as np

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

    Speech is cut into turns at pauses (a level gate) and streamed to the source. A turn
    opens with the `preroll_s` before the voice began, sent at once: word onsets are kept, and
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
        threshold_dbfs: float = -45.0,
        hang_s: float = 0.6,
        preroll_s: float = 0.3,
    ) -> None:
        self._source = source
        self._turns = turns
        self._meters = meters
        self._rate = rate
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self._hang_s = hang_s
        self._preroll_s = preroll_s
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

    def _loud(self, samples: np.ndarray) -> bool:
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
        return rms > self._threshold

    async def run(self) -> None:
        preroll: collections.deque[tuple[np.ndarray, float]] = collections.deque()
        turn_id: str | None = None
        quiet_s = 0.0
        while True:
            samples, spoken_at = await self._queue.get()
            duration = len(samples) / self._rate
            loud = self._loud(samples)
            try:
                if turn_id is None:
                    preroll.append((samples, spoken_at))
                    while len(preroll) > 1 and len(preroll) * duration > self._preroll_s:
                        preroll.popleft()
                    if not loud:
                        continue
                    turn_id = self._turns.new_id("puppet")
                    self._meters.speech_sent(turn_id, preroll[0][1])
                    pcm = np.concatenate([chunk for chunk, _ in preroll])
                    preroll.clear()
                    quiet_s = 0.0
                    self.turns_sent += 1
                    await self._source.send_speech(pcm, self._rate, end_of_turn=False, turn_id=turn_id)
                    continue
                quiet_s = 0.0 if loud else quiet_s + duration
                ends = quiet_s >= self._hang_s
                await self._source.send_speech(samples, self._rate, end_of_turn=ends, turn_id=turn_id)
                if ends:
                    turn_id = None
            except NotConnected:
                turn_id = None  # the node is away: this speech is lost; start afresh when it returns
