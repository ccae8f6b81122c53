"""Client input into turn audio: PCM parsing, resampling and speech synthesis, kept off the event loop.

Small chunks (what a live client streams) are converted in place: a thread hop would
cost more than the work. Large ones, and all synthesis, run on the ingest thread in
pieces of a second, so a 15 MiB message or a 5,000-character text never stalls the
loop that paces every live session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, AvatarInputError
from avatar_node.media.audio import StreamResampler, pcm_s16le_to_mono, validate_sample_rate
from avatar_node.speech.tts import SpeechClip

from . import errors
from .speech import SpeechQueue, SpeechTurn

T = TypeVar("T")
RunInThread = Callable[..., Awaitable[T]]

#: Input up to this size is converted on the event loop.
INLINE_BYTES = 64 * 1024
#: Conversion works through long input in pieces of this many source samples per second.
PIECE_SECONDS = 1.0
#: Most speech a stream may have waiting (open turns included).
MAX_QUEUED_SPEECH_S = 600


class AudioConverter:
    """One stream of int16 mono at `source_rate` -> the clock rate (int16) and the engine
    rate (float32). Streaming and exact: chunked output equals one-shot output."""

    def __init__(self, source_rate: int, clock_rate: int) -> None:
        self.source_rate = source_rate
        self._to_output = None if source_rate == clock_rate else StreamResampler(source_rate, clock_rate)
        self._to_engine = (
            None if source_rate == SPEECH_SAMPLE_RATE else StreamResampler(source_rate, SPEECH_SAMPLE_RATE)
        )

    def convert(self, samples: np.ndarray, final: bool) -> tuple[np.ndarray, np.ndarray]:
        outs, engs = [], []
        piece = max(1, int(self.source_rate * PIECE_SECONDS))
        for start in range(0, len(samples), piece):
            chunk = samples[start : start + piece]
            outs.append(self._to_output.process(chunk) if self._to_output else chunk)
            engs.append(self._to_engine.process(chunk) if self._to_engine else chunk)
        if final:
            if self._to_output:
                outs.append(self._to_output.flush())
            if self._to_engine:
                engs.append(self._to_engine.flush())
        out = np.concatenate(outs).astype(np.int16, copy=False) if outs else np.zeros(0, np.int16)
        eng = np.concatenate(engs) if engs else np.zeros(0, np.int16)
        return out, eng.astype(np.float32) * np.float32(1 / 32768)


@dataclass
class ParsedAudio:
    samples: np.ndarray  # int16 mono
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def parse_pcm(pcm: bytes | np.ndarray, rate: int, channels: int) -> ParsedAudio:
    """Bytes of s16le, or int16 / float32 arrays (samples,) or (samples, channels), as int16 mono."""
    try:
        rate = validate_sample_rate(rate)
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            return ParsedAudio(pcm_s16le_to_mono(bytes(pcm), channels), rate)
        audio = np.asarray(pcm)
        if audio.ndim == 2:
            audio = audio.mean(axis=1) if audio.dtype.kind == "f" else np.rint(audio.astype(np.float32).mean(axis=1))
        if audio.ndim != 1:
            raise AvatarInputError(f"audio must be shaped (samples,) or (samples, channels); got "
                                   f"{audio.shape}", "BAD_AUDIO")
        if audio.dtype.kind == "f":
            audio = np.clip(np.nan_to_num(audio) * 32768.0, -32768, 32767)
        return ParsedAudio(np.asarray(audio, dtype=np.int16), rate)
    except AvatarInputError as exc:
        if exc.reason == "INVALID_INPUT":
            exc.reason = "BAD_AUDIO"
        raise errors.from_input_error(exc) from None


class SpeechIngest:
    """Feeds one stream's speech queue from client audio and text, in the order they come."""

    def __init__(
        self,
        queue: SpeechQueue,
        clock_rate: int,
        run_in_thread: Callable[..., Awaitable[object]],
        synthesize: Callable[[str, str], SpeechClip] | None,
    ) -> None:
        self._queue = queue
        self._clock_rate = clock_rate
        self._run = run_in_thread
        self._synthesize = synthesize
        self._converter: AudioConverter | None = None
        self._converting: SpeechTurn | None = None

    def check_room(self, seconds: float) -> None:
        if self._queue.queued_samples / self._clock_rate + seconds > MAX_QUEUED_SPEECH_S:
            raise errors.exhausted(
                "SPEECH_QUEUE_FULL",
                f"more than {MAX_QUEUED_SPEECH_S} s of speech would be queued; send audio no faster than "
                "needed (about real time) or wait for turns to finish",
            )

    async def push_audio(
        self,
        pcm: bytes | np.ndarray,
        rate: int,
        channels: int,
        end_of_turn: bool,
        turn_id: str,
        now: Callable[[], float],
    ) -> SpeechTurn | None:
        """Add streamed speech. Returns the turn if this call closed it."""
        size = pcm.nbytes if isinstance(pcm, np.ndarray) else len(pcm)
        if size > INLINE_BYTES:
            parsed = await self._run(parse_pcm, pcm, rate, channels)
        else:
            parsed = parse_pcm(pcm, rate, channels)
        assert isinstance(parsed, ParsedAudio)
        self.check_room(parsed.seconds)
        turn = self._queue.open_turn
        if turn is not None and (turn.source_rate != parsed.rate or turn is not self._converting):
            # A new rate mid-turn (or a turn opened elsewhere): close it, start another.
            await self._finish(turn)
            turn = None
        if turn is None:
            if not len(parsed.samples) and end_of_turn:
                return None
            turn = self._queue.start_open_turn(turn_id, parsed.rate)
            self._converter, self._converting = AudioConverter(parsed.rate, self._clock_rate), turn
        await self._convert_into(turn, parsed.samples, end_of_turn, now)
        if end_of_turn:
            self._queue.close(turn)
            self._converter = self._converting = None
            return turn
        return None

    async def close_open_turn(self) -> SpeechTurn | None:
        """Close a streamed turn with what has arrived (at `end`)."""
        turn = self._queue.open_turn
        if turn is None:
            return None
        await self._finish(turn)
        return turn

    async def _finish(self, turn: SpeechTurn) -> None:
        if turn is self._converting:
            await self._convert_into(turn, np.zeros(0, np.int16), True, lambda: 0.0)
        self._queue.close(turn)
        self._converter = self._converting = None

    async def _convert_into(
        self, turn: SpeechTurn, samples: np.ndarray, final: bool, now: Callable[[], float]
    ) -> None:
        converter = self._converter
        assert converter is not None
        converted: tuple[np.ndarray, np.ndarray]
        if samples.nbytes > INLINE_BYTES:
            converted = await self._run(converter.convert, samples, final)  # type: ignore[assignment]
        else:
            converted = converter.convert(samples, final)
        out, eng = converted
        self._queue.append(turn, out, eng, now(), len(samples) / converter.source_rate)

    async def push_text(self, text: str, voice: str, turn_id: str) -> SpeechTurn:
        if self._synthesize is None:
            raise errors.precondition("NO_TTS", "this node has no text-to-speech voice; send speech audio instead")
        clip = await self._run(self._synthesize_and_convert, text, voice)
        assert isinstance(clip, _ConvertedClip)
        self.check_room(len(clip.output) / self._clock_rate)
        if self._queue.open_turn is not None:
            await self._finish(self._queue.open_turn)
        return self._queue.queue_clip(turn_id, clip.rate, clip.output, clip.engine, clip.phonemes)

    def _synthesize_and_convert(self, text: str, voice: str) -> _ConvertedClip:
        assert self._synthesize is not None
        try:
            clip = self._synthesize(text, voice)
        except AvatarInputError as exc:
            if exc.reason == "INVALID_INPUT":
                exc.reason = "BAD_TEXT"
            raise errors.from_input_error(exc) from None
        out, eng = AudioConverter(clip.sample_rate, self._clock_rate).convert(np.asarray(clip.samples), True)
        return _ConvertedClip(clip.sample_rate, out, eng, clip.phonemes)


@dataclass
class _ConvertedClip:
    rate: int
    output: np.ndarray
    engine: np.ndarray
    phonemes: list  # type: ignore[type-arg]
