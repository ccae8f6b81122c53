"""The avatar's speech, queued as turns and cut into frames on the media clock.

Each turn holds its audio twice, converted once on arrival: at the output clock rate
(what the listener hears) and at the engine rate (what drives the face). Frames take
their audio by consumed-sample counters, so slices are contiguous and exact however
long the session runs, and what was cut is released at once (a long turn holds only
its unplayed tail). A turn starts on a frame boundary.

When a turn may start and how long to wait for late audio are decisions of the
caller (live timing or render order); this module only counts samples. A frame cut
while an open turn has no audio yet is an underrun: it is silent, and the turn goes
on one frame later, so audio and video stay together.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, PhonemeEvent, TurnAudio
from avatar_node.media.clock import MediaClock

from .buffers import SampleBuffer, silence


@dataclass(eq=False)
class SpeechTurn:
    turn_id: str
    source_rate: int
    output: SampleBuffer = field(default_factory=lambda: SampleBuffer(np.int16))  # clock rate
    engine: SampleBuffer = field(default_factory=lambda: SampleBuffer(np.float32))  # SPEECH_SAMPLE_RATE
    phonemes: list[PhonemeEvent] = field(default_factory=list)  # seconds from the turn's start
    closed: bool = False
    consumed: int = 0  # output samples already cut into frames
    consumed_engine: int = 0  # the same position in engine samples
    played: int = 0  # output speech samples delivered; kept by the stream
    start_pts: int | None = None
    first_arrival: float | None = None  # when its first audio arrived (live timing)
    interrupted: bool = False  # dropped by barge-in while a frame of it was being delivered
    largest_chunk_s: float = 0.0  # the longest piece of audio that arrived at once
    serial: int = 0  # numbers the session's turns, for the engine (TurnAudio.turn)
    handed_over: int = 0  # engine samples already given to the engine as TurnAudio

    @property
    def duration_samples(self) -> int:
        return self.output.end

    @property
    def unplayed_samples(self) -> int:
        return self.output.end - self.consumed

    @property
    def exhausted(self) -> bool:
        return self.closed and self.consumed >= self.output.end


@dataclass
class FrameSpeech:
    """Speech for one frame."""

    audio: np.ndarray  # int16 at the clock rate, exactly the frame's length
    turn: SpeechTurn | None  # the turn this frame plays, if any
    speech_samples: int  # real (not padding) speech samples in `audio`
    starts_turn: bool
    ends_turn: bool
    underrun: bool

    @property
    def speaking(self) -> bool:
        return self.turn is not None and not self.underrun


@dataclass
class StepSpeech:
    frames: list[FrameSpeech]
    engine_audio: np.ndarray  # float32 at SPEECH_SAMPLE_RATE: the step's span plus the look-ahead
    phonemes: list[PhonemeEvent]  # relative to the step's first frame
    turn_audio: TurnAudio | None = None  # the last turn of the step: what arrived of it since


class SpeechQueue:
    def __init__(self, clock: MediaClock, lookahead_ms: int) -> None:
        self.clock = clock
        self.lookahead = SPEECH_SAMPLE_RATE * lookahead_ms // 1000  # engine samples
        self._turns: deque[SpeechTurn] = deque()
        self._current: SpeechTurn | None = None
        self._open: SpeechTurn | None = None  # receiving streamed audio
        self._ids = itertools.count(1)
        self._serials = itertools.count(1)
        self.underruns = 0

    # ------------------------------------------------------------------ input

    @property
    def open_turn(self) -> SpeechTurn | None:
        return self._open

    def start_open_turn(self, turn_id: str, source_rate: int) -> SpeechTurn:
        """Queue a turn that receives streamed audio until `close`."""
        if self._open is not None:
            raise RuntimeError("close the open turn first")
        turn = SpeechTurn(turn_id or f"turn-{next(self._ids)}", source_rate, serial=next(self._serials))
        self._open = turn
        self._turns.append(turn)
        return turn

    def append(self, turn: SpeechTurn, output: np.ndarray, engine: np.ndarray, now: float, chunk_s: float) -> bool:
        """Add converted audio to a queued turn; False if the turn was dropped meanwhile."""
        if turn is not self._current and turn not in self._turns:
            return False
        if turn.first_arrival is None and len(output):
            turn.first_arrival = now
        turn.largest_chunk_s = max(turn.largest_chunk_s, chunk_s)
        turn.output.append(output)
        turn.engine.append(engine)
        return True

    def close(self, turn: SpeechTurn) -> None:
        turn.closed = True
        if self._open is turn:
            self._open = None

    def queue_clip(
        self, turn_id: str, source_rate: int, output: np.ndarray, engine: np.ndarray, phonemes: Sequence[PhonemeEvent]
    ) -> SpeechTurn:
        """Queue a whole, closed turn (synthesised text). An open turn is closed first."""
        if self._open is not None:
            self.close(self._open)
        turn = SpeechTurn(
            turn_id or f"turn-{next(self._ids)}", source_rate, phonemes=list(phonemes), serial=next(self._serials)
        )
        turn.output.append(output)
        turn.engine.append(engine)
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
        """Nothing playing, nothing queued, no turn open."""
        return self._current is None and not self._turns

    @property
    def current(self) -> SpeechTurn | None:
        return self._current

    @property
    def pending(self) -> SpeechTurn | None:
        """The turn that starts next, when none is playing."""
        return self._turns[0] if self._current is None and self._turns else None

    @property
    def queued_samples(self) -> int:
        """Speech not yet cut into frames, open turns included (output samples)."""
        turns = ([self._current] if self._current else []) + list(self._turns)
        return sum(t.unplayed_samples for t in turns)

    @property
    def queued_turns(self) -> int:
        return len(self._turns) + (self._current is not None)

    @property
    def queued_ms(self) -> int:
        return self.queued_samples * 1000 // self.clock.clock_rate

    def has_audio_for(self, turn: SpeechTurn, first_index: int, count: int) -> bool:
        """Whether `turn` holds the audio for `count` frames from its position, plus the look-ahead."""
        if turn.closed:
            return True
        ticks = self.clock.pts(first_index + count) - self.clock.pts(first_index)
        engine_ticks = self.clock.samples_at(first_index + count, SPEECH_SAMPLE_RATE) - self.clock.samples_at(
            first_index, SPEECH_SAMPLE_RATE
        )
        return (
            turn.output.end >= turn.consumed + ticks
            and turn.engine.end >= turn.consumed_engine + engine_ticks + self.lookahead
        )

    def frames_with_audio(self, first_index: int, limit: int) -> int:
        """How many of the next `limit` frames can be cut without an underrun."""
        turn = self._current
        if turn is None or turn.closed:
            return limit
        n = 0
        while n < limit and self.has_audio_for(turn, first_index, n + 1):
            n += 1
        return n

    # ------------------------------------------------------------------ output

    def take_frame(self, index: int, may_start: bool) -> FrameSpeech:
        ticks = self.clock.frame_ticks(index)
        starts = False
        if self._current is None and self._turns and may_start:
            self._current = self._turns.popleft()
            starts = True
        turn = self._current
        if turn is None:
            return FrameSpeech(silence(ticks), None, 0, False, False, False)
        if not self.has_audio_for(turn, index, 1):
            self.underruns += 1
            # Speech resumes one frame later; audio and video shift together.
            return FrameSpeech(silence(ticks), turn, 0, starts, False, True)
        audio = turn.output.window(turn.consumed, ticks)
        real = max(0, min(ticks, turn.output.end - turn.consumed))
        turn.consumed += ticks
        turn.consumed_engine = round(turn.consumed * SPEECH_SAMPLE_RATE / self.clock.clock_rate)
        turn.output.release_before(turn.consumed)
        ends = turn.exhausted
        if ends:
            self._current = None
        return FrameSpeech(audio, turn, real, starts, ends, False)

    def take_step(self, first_index: int, count: int, may_start: bool) -> StepSpeech:
        """Speech for frames [first_index, first_index+count) and the engine's audio window."""
        frames: list[FrameSpeech] = []
        segments: list[np.ndarray] = []
        phonemes: list[PhonemeEvent] = []
        step_start = self.clock.samples_at(first_index, SPEECH_SAMPLE_RATE)
        seen: set[int] = set()
        offsets: dict[int, int] = {}  # turn -> its samples before the step's first frame
        for k in range(first_index, first_index + count):
            span = self.clock.samples_at(k + 1, SPEECH_SAMPLE_RATE) - self.clock.samples_at(k, SPEECH_SAMPLE_RATE)
            fs = self.take_frame(k, may_start)
            frames.append(fs)
            if not fs.speaking or fs.turn is None:
                segments.append(silence(span, np.float32))
                continue
            turn = fs.turn
            ticks = len(fs.audio)
            position = round((turn.consumed - ticks) * SPEECH_SAMPLE_RATE / self.clock.clock_rate)
            offsets.setdefault(id(turn), position - (self.clock.samples_at(k, SPEECH_SAMPLE_RATE) - step_start))
            segments.append(turn.engine.window(position, span))
            if id(turn) not in seen and turn.phonemes:
                seen.add(id(turn))
                offset = (self.clock.samples_at(k, SPEECH_SAMPLE_RATE) - step_start - position) / SPEECH_SAMPLE_RATE
                phonemes += [PhonemeEvent(p.start_s + offset, p.end_s + offset, p.phoneme) for p in turn.phonemes]
        turn_audio = self._hand_over(frames, offsets)
        last = self._current
        if last is not None and frames and frames[-1].turn is last and not frames[-1].underrun:
            segments.append(last.engine.window(last.consumed_engine, self.lookahead))
            last.engine.release_before(last.consumed_engine)
        else:
            segments.append(silence(self.lookahead, np.float32))
        if not any(f.speaking for f in frames):
            engine_audio = silence(sum(map(len, segments)), np.float32)
        else:
            engine_audio = np.concatenate(segments)
        window_s = len(engine_audio) / SPEECH_SAMPLE_RATE
        phonemes = [p for p in phonemes if p.end_s > 0 and p.start_s < window_s]
        return StepSpeech(frames, engine_audio, phonemes, turn_audio)

    @staticmethod
    def _hand_over(frames: list[FrameSpeech], offsets: dict[int, int]) -> TurnAudio | None:
        """What arrived of the step's last speaking turn since it was last handed over
        (read before the step releases what it played)."""
        speaking = [f for f in frames if f.speaking and f.turn is not None]
        if not speaking:
            return None
        turn = speaking[-1].turn
        assert turn is not None
        start = max(turn.handed_over, turn.engine.released)
        arrived = turn.engine.window(start, turn.engine.end - start)
        turn.handed_over = turn.engine.end
        return TurnAudio(turn.serial, offsets[id(turn)], start, arrived, complete=turn.closed)
