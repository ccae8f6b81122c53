"""A turn's accounting, to the sample: what an interrupt reports, what a dropped frame
costs, speech at the usual TTS rate, the look-ahead an engine is given, the turn cap.

A frame at 25 fps is exactly 1,920 samples at 48 kHz (40 ms), so every figure here is
asserted exactly: an error of one frame is a failure, not a tolerance.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, Conditioning, StreamOptions
from avatar_node.engines.testcard import TestCardEngine, TestCardStream
from avatar_node.metrics import node_registry
from avatar_node.pipeline import AvatarRuntime, PipelineError, SessionOptions, TurnEvent, TurnKind
from avatar_node.pipeline import stream as stream_module
from avatar_node.pipeline.ingest import AudioConverter

from .conftest import Received, check_one_clock, collect, tone

FRAME = 1920  # samples per frame at 48 kHz and 25 fps


async def _until(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _finished(received: Received, turn_id: str) -> TurnEvent:
    return next(t for t in received.turns if t.turn_id == turn_id and t.kind is TurnKind.FINISHED)


async def test_an_interrupt_reports_exactly_the_speech_delivered_and_nothing_cut_after_it_speaks(photo):
    async with AvatarRuntime(["testcard"], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb", width=160, height=120))
        received = Received()
        reader = asyncio.create_task(collect(stream, received))
        await stream.push_speech(tone(4.0), 16000, end_of_turn=True, turn_id="long")
        await _until(lambda: sum(f.speaking for f in received.frames) >= 15)
        committed = stream.parts.board.next_send  # frames before this one are delivered or on their way
        stream.interrupt()
        await _until(lambda: any(t.kind is TurnKind.FINISHED for t in received.turns))
        await asyncio.sleep(0.3)
        await stream.end()
        await reader
        await stream.aclose()
    frames = received.frames
    check_one_clock(frames)
    speaking = [f for f in frames if f.speaking]
    assert speaking[-1].index < committed, "a frame cut after the interrupt spoke"
    assert not any(f.audio.any() for f in frames if f.index > speaking[-1].index)
    finished = _finished(received, "long")
    assert finished.interrupted
    # Every speaking frame is a whole one (the turn is far from its end): 40 ms each, exactly.
    assert sum(len(f.audio) for f in speaking) == FRAME * len(speaking)
    assert finished.played_ms == 40 * len(speaking), (finished.played_ms, len(speaking))
    assert finished.pts == speaking[-1].pts + FRAME


async def test_the_speech_of_dropped_frames_is_not_played_and_the_node_counts_the_drops(photo):
    async with AvatarRuntime(["testcard"], text_to_speech=False) as runtime:
        registry = node_registry(runtime)
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb", width=160, height=120))
        await stream.push_speech(tone(3.0), 16000, end_of_turn=True, turn_id="t")
        await asyncio.sleep(1.5)  # a consumer that does not read: live frames are dropped
        received = Received()
        reader = asyncio.create_task(collect(stream, received))
        await _until(lambda: any(t.kind is TurnKind.FINISHED for t in received.turns))
        dropped = stream.stats().frames_dropped
        assert dropped > 0
        assert registry.get_sample_value("avatar_node_frames_dropped_total") == dropped
        await stream.end()
        await reader
        await stream.aclose()
        # Once the stream is closed its drops stay in the node's totals.
        assert registry.get_sample_value("avatar_node_frames_dropped_total") == dropped
    finished = _finished(received, "t")
    speaking = [f for f in received.frames if f.speaking]
    assert not finished.interrupted and finished.duration_ms == 3000
    delivered = sum(len(f.audio) for f in speaking)
    assert delivered < 3 * 48000
    assert finished.played_ms == delivered * 1000 // 48000, (finished.played_ms, delivered)


class _RecordingCard(TestCardEngine):
    """The test card with an audio look-ahead, keeping every conditioning it was given."""

    info = dataclasses.replace(TestCardEngine.info, audio_lookahead_ms=200)

    def __init__(self) -> None:
        super().__init__()
        self.conditions: list[Conditioning] = []

    def open(self, identity, options: StreamOptions) -> TestCardStream:
        engine = self

        class Recording(TestCardStream):
            def step(self, cond: Conditioning) -> list[np.ndarray]:
                engine.conditions.append(cond)
                return super().step(cond)

        return Recording(identity.data, options, self)


async def test_speech_at_24_khz_plays_whole_at_its_own_pitch_and_drives_the_face(photo):
    rate, seconds = 24000, 1.6  # 40 whole frames
    speech = tone(seconds, rate=rate)
    engine = _RecordingCard()
    async with AvatarRuntime([engine], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(live=False, video="rgb", width=160, height=120))
        for start in range(0, len(speech), 480):  # 20 ms chunks, as a TTS streams them
            piece = speech[start : start + 480]
            await stream.push_speech(piece, rate, end_of_turn=start + 480 >= len(speech), turn_id="tts")
        await stream.end()
        received = await collect(stream)
        await stream.aclose()
    frames = received.frames
    check_one_clock(frames)
    finished = _finished(received, "tts")
    assert finished.duration_ms == finished.played_ms == 1600
    heard = np.concatenate([f.audio for f in frames if f.speaking])
    assert len(heard) == 2 * len(speech) == len(frames) * FRAME
    expected, engine_expected = AudioConverter(rate, 48000).convert(speech, final=True)
    np.testing.assert_array_equal(heard, expected)
    assert _peak_hz(heard, 48000) == pytest.approx(220, abs=3)
    # The face got the same speech at the engine's rate: 2/3 as many samples, same pitch.
    spans = [c.speech[: SPEECH_SAMPLE_RATE // 25] for c in engine.conditions if any(c.speaking)]
    face = np.concatenate(spans)
    assert len(face) == len(engine_expected) == len(speech) * 2 // 3
    np.testing.assert_allclose(face, engine_expected, atol=1e-6)
    assert _peak_hz(face, SPEECH_SAMPLE_RATE) == pytest.approx(220, abs=3)


async def test_a_streamed_turn_waits_for_the_look_ahead_the_engine_needs(photo):
    speech = tone(1.2)  # at the engine's rate: what the engine gets is exactly speech / 32768
    engine = _RecordingCard()
    lookahead = SPEECH_SAMPLE_RATE * engine.info.audio_lookahead_ms // 1000
    span = SPEECH_SAMPLE_RATE // 25
    async with AvatarRuntime([engine], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(live=False, video="rgb", width=160, height=120))
        for start in range(0, len(speech), span):  # a frame's worth at a time, with the loop free between
            await stream.push_speech(speech[start : start + span], SPEECH_SAMPLE_RATE,
                                     end_of_turn=start + span >= len(speech))
            await asyncio.sleep(0.002)
        await stream.end()
        await collect(stream)
        await stream.aclose()
    whole = np.concatenate([speech.astype(np.float32) / 32768, np.zeros(lookahead + span, np.float32)])
    speaking = [c for c in engine.conditions if any(c.speaking)]
    assert len(speaking) == len(speech) // span
    for k, cond in enumerate(speaking):
        # Each step's window is the real speech ahead, never zeros where audio was still to come.
        np.testing.assert_array_equal(cond.speech, whole[k * span : (k + 1) * span + lookahead], err_msg=f"step {k}")


async def test_new_speech_after_an_interrupt_mid_stream_is_a_new_turn_and_plays_whole(photo):
    async with AvatarRuntime(["testcard"], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb", width=160, height=120))
        received = Received()
        reader = asyncio.create_task(collect(stream, received))
        first = tone(0.6)
        await stream.push_speech(first, 16000, turn_id="a")  # streamed, still open
        await stream.push_speech(first, 16000, turn_id="a")
        await _until(lambda: any(f.speaking for f in received.frames))
        stream.interrupt()
        await stream.push_speech(tone(0.8), 16000, end_of_turn=True, turn_id="b")
        await _until(lambda: any(t.turn_id == "b" and t.kind is TurnKind.FINISHED for t in received.turns))
        await stream.end()
        await reader
        await stream.aclose()
    assert _finished(received, "a").interrupted
    b = _finished(received, "b")
    assert not b.interrupted and b.played_ms == b.duration_ms == 800
    kinds = [(t.turn_id, t.kind) for t in received.turns if t.turn_id == "b"]
    assert kinds == [("b", TurnKind.QUEUED), ("b", TurnKind.STARTED), ("b", TurnKind.FINISHED)]


async def test_text_turns_count_against_the_turn_cap(photo, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_QUEUED_TURNS", 3)
    async with AvatarRuntime(["testcard"]) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb", width=160, height=120))
        reader = asyncio.create_task(collect(stream))
        for n in range(3):
            await stream.push_speech(tone(3.0), 16000, end_of_turn=True, turn_id=f"t{n}")
        for refused in (stream.say("One more.", turn_id="text"),
                        stream.push_speech(tone(0.2), 16000, end_of_turn=True)):
            with pytest.raises(PipelineError) as exc:
                await refused
            assert exc.value.reason == "TOO_MANY_TURNS"
        await stream.end(discard_pending=True)
        await reader
        await stream.aclose()


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))

