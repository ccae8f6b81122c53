"""The avatar's speech, queued as turns and cut into frames on the media clock.

Each turn keeps its audio twice, resampled once on arrival: at the output clock rate
(what the client hears) and at the engine rate (what drives the face). Frames take
their audio by consumed-sample counters, so slices are contiguous and exact however
long the session runs. A turn starts on a frame boundary.

Underruns (an open turn whose audio has not arrived yet): a live session shows a
silent frame and resumes the turn one frame later, so audio and video stay together;
a render session waits for the audio instead.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from .engines.base import SPEECH_SAMPLE_RATE, PhonemeEvent
from .media.clock import MediaClock


class Resampler(Protocol):
    def process(self, chunk: np.ndarray) -> np.ndarray: ...
    def flush(self) -> np.ndarray: ...


#: Makes a streaming int16 -> int16 resampler for (in_rate, out_rate).
ResamplerFactory = Callable[[int, int], Resampler]


class _Growable:
    """An append-only sample buffer with amortised O(1) appends."""

    def __init__(self, dtype: type) -> None:
        self._data = np.zeros(4096, dtype=dtype)
        self.size = 0

    def append(self, samples: np.ndarray) -> None:
        need = self.size + len(samples)
        if need > len(self._data):
            grown = np.zeros(max(need, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : need] = samples
        self.size = need

    def window(self, start: int, length: int) -> np.ndarray:
        """Samples [start, start+length), zero-padded past the end."""
        out = np.zeros(length, dtype=self._data.dtype)
        end = min(self.size, start + length)
        if end > start:
            out[: end - start] = self._data[start:end]
        return out


@dataclass(eq=False)
class SpeechTurn:
    turn_id: str
    source_rate: int
    output: _Growable
    engine: _Growable
    to_output: Resampler | None
    to_engine: Resampler | None
    phonemes: list[PhonemeEvent] = field(default_factory=list)
    closed: bool = False
    #: Samples (output rate) and engine samples already cut into frames.
    consumed: int = 0
    consumed_engine: int = 0
    #: Speech samples (output rate) the client has been sent; set by the session.
    played: int = 0
    start_pts: int | None = None

    @property
    def duration_samples(self) -> int:
        return self.output.size

    @property
    def exhausted(self) -> bool:
        return self.closed and self.consumed >= self.output.size


@dataclass
class FrameSpeech:
    """Speech for one frame."""

    audio: np.ndarray  # int16 at the clock rate, exactly the frame's length
    turn: SpeechTurn | None  # the turn this frame plays, if any
    speech_samples: int  # real (not padding) speech samples in `audio`
    starts_turn: bool
    ends_turn: bool
    underrun: bool


@dataclass
class StepSpeech:
    frames: list[FrameSpeech]
    engine_audio: np.ndarray  # float32 mono at SPEECH_SAMPLE_RATE, step span + look-ahead
    phonemes: list[PhonemeEvent]


class SpeechQueue:
    def __init__(
        self,
        clock: MediaClock,
        lookahead_ms: int,
        make_resampler: ResamplerFactory,
        live: bool,
        prebuffer_ms: int = 120,
    ) -> None:
        self.clock = clock
        self.live = live
        self._make_resampler = make_resampler
        self._lookahead = SPEECH_SAMPLE_RATE * lookahead_ms // 1000
        # An open turn starts once this much is buffered, so 1x input can keep up.
        self._prebuffer = clock.clock_rate * prebuffer_ms // 1000
        self._turns: deque[SpeechTurn] = deque()
        self._current: SpeechTurn | None = None
        self._open: SpeechTurn | None = None  # receiving streamed audio
        self._ids = itertools.count(1)
        self.underruns = 0

    # ------------------------------------------------------------------ input

    def _new_turn(self, turn_id: str, rate: int) -> SpeechTurn:
        rs = self._make_resampler
        return SpeechTurn(
            turn_id=turn_id or f"turn-{next(self._ids)}",
            source_rate=rate,
            output=_Growable(np.int16),
            engine=_Growable(np.float32),
            to_output=None if rate == self.clock.clock_rate else rs(rate, self.clock.clock_rate),
            to_engine=None if rate == SPEECH_SAMPLE_RATE else rs(rate, SPEECH_SAMPLE_RATE),
        )

    @staticmethod
    def _feed(turn: SpeechTurn, samples: np.ndarray, final: bool) -> None:
        out = turn.to_output.process(samples) if turn.to_output else samples
        eng = turn.to_engine.process(samples) if turn.to_engine else samples
        if final:
            if turn.to_output:
                out = np.concatenate([out, turn.to_output.flush()])
            if turn.to_engine:
                eng = np.concatenate([eng, turn.to_engine.flush()])
        turn.output.append(out.astype(np.int16, copy=False))
        turn.engine.append(eng.astype(np.float32) / 32768.0)

    def push_audio(
        self, samples: np.ndarray, rate: int, end_of_turn: bool, turn_id: str = ""
    ) -> tuple[SpeechTurn | None, bool]:
        """Append streamed speech (int16 mono). Returns (turn, whether it was just closed)."""
        turn = self._open
        if turn is not None and turn.source_rate != rate:
            # A new rate mid-turn: close this turn and start another at the new rate.
            self._close(turn)
            turn = None
        if turn is None:
            if len(samples) == 0 and end_of_turn:
                return None, False
            turn = self._new_turn(turn_id, rate)
            self._open = turn
            self._turns.append(turn)
        self._feed(turn, samples, final=end_of_turn)
        if end_of_turn:
            turn.closed = True
            self._open = None
        return turn, end_of_turn

    def _close(self, turn: SpeechTurn) -> None:
        self._feed(turn, np.zeros(0, np.int16), final=True)
        turn.closed = True
        if self._open is turn:
            self._open = None

    def push_clip(
        self, samples: np.ndarray, rate: int, phonemes: Sequence[PhonemeEvent], turn_id: str = ""
    ) -> SpeechTurn:
        """Queue a whole turn (synthesised text)."""
        turn = self._new_turn(turn_id, rate)
        turn.phonemes = list(phonemes)
        self._feed(turn, samples, final=True)
        turn.closed = True
        self._turns.append(turn)
        return turn

    def clear(self) -> list[SpeechTurn]:
        """Barge-in: drop the playing turn and everything queued. Returns the dropped turns."""
        dropped = ([self._current] if self._current else []) + list(self._turns)
        self._current, self._open = None, None
        self._turns.clear()
        return dropped

    # ------------------------------------------------------------------ state

    @property
    def idle(self) -> bool:
        """Nothing playing and nothing queued."""
        return self._current is None and not self._turns

    @property
    def queued_ms(self) -> int:
        turns = ([self._current] if self._current else []) + list(self._turns)
        samples = sum(t.output.size - t.consumed for t in turns)
        return samples * 1000 // self.clock.clock_rate

    def ready(self) -> bool:
        """Whether the next frame can be cut now without waiting for input (render mode)."""
        turn = self._current
        if turn is None:
            if not self._turns:
                return True
            turn = self._turns[0]
            if not self._startable(turn):
                return False  # a silent frame now would push the speech one frame late
        return turn.closed or self._available(turn, self.clock.frame_ticks(0))

    def _available(self, turn: SpeechTurn, ticks: int) -> bool:
        need_eng = turn.consumed_engine + self._lookahead + round(
            ticks * SPEECH_SAMPLE_RATE / self.clock.clock_rate
        )
        return turn.output.size >= turn.consumed + ticks and turn.engine.size >= need_eng

    def startable_now(self) -> bool:
        """Nothing is playing and the next queued turn could start at the next frame."""
        return self._current is None and bool(self._turns) and self._startable(self._turns[0])

    def _startable(self, turn: SpeechTurn) -> bool:
        return turn.closed or turn.output.size >= self._prebuffer

    # ------------------------------------------------------------------ output

    def take_frame(self, index: int) -> FrameSpeech:
        ticks = self.clock.frame_ticks(index)
        starts = False
        if self._current is None and self._turns and self._startable(self._turns[0]):
            self._current = self._turns.popleft()
            starts = True
        turn = self._current
        if turn is None:
            return FrameSpeech(np.zeros(ticks, np.int16), None, 0, False, False, False)
        if not turn.closed and not self._available(turn, ticks):
            if self.live:
                self.underruns += 1
                # Speech resumes one frame later; audio and video shift together.
                return FrameSpeech(np.zeros(ticks, np.int16), turn, 0, starts, False, True)
            raise RuntimeError("take_frame without audio in render mode; check ready() first")
        audio = turn.output.window(turn.consumed, ticks)
        real = max(0, min(ticks, turn.output.size - turn.consumed))
        turn.consumed += ticks
        turn.consumed_engine = round(turn.consumed * SPEECH_SAMPLE_RATE / self.clock.clock_rate)
        ends = turn.exhausted
        if ends:
            self._current = None
        return FrameSpeech(audio, turn, real, starts, ends, False)

    def take_step(self, first_index: int, count: int) -> StepSpeech:
        """Speech for frames [first_index, first_index+count) and the engine's audio window."""
        frames: list[FrameSpeech] = []
        eng_start: tuple[SpeechTurn, int] | None = None
        for k in range(count):
            turn_before = self._current or (self._turns[0] if self._turns else None)
            consumed_before = turn_before.consumed_engine if turn_before else 0
            fs = self.take_frame(first_index + k)
            if k == 0 and fs.turn is not None and not fs.underrun:
                eng_start = (fs.turn, consumed_before if not fs.starts_turn else 0)
            frames.append(fs)
        span = self.clock.samples_at(first_index + count, SPEECH_SAMPLE_RATE) - self.clock.samples_at(
            first_index, SPEECH_SAMPLE_RATE
        )
        length = span + self._lookahead
        phonemes: list[PhonemeEvent] = []
        if eng_start is None:
            engine_audio = np.zeros(length, np.float32)
        else:
            turn, start = eng_start
            engine_audio = turn.engine.window(start, length)
            offset = start / SPEECH_SAMPLE_RATE
            window_s = length / SPEECH_SAMPLE_RATE
            phonemes = [
                PhonemeEvent(p.start_s - offset, p.end_s - offset, p.phoneme)
                for p in turn.phonemes
                if p.end_s > offset and p.start_s < offset + window_s
            ]
        return StepSpeech(frames, engine_audio, phonemes)
