"""SpeechQueue, FrameBoard and LivePacer on their own: sample counts, epochs, and the pacer's
due times on a virtual clock (every time below is exact, not measured)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from avatar_node.engines.base import SPEECH_SAMPLE_RATE
from avatar_node.media.clock import MediaClock
from avatar_node.pipeline.board import CutFrame, FrameBoard, Signal
from avatar_node.pipeline.pacer import LivePacer
from avatar_node.pipeline.schedule import REPEAT_AFTER_S, LiveSchedule
from avatar_node.pipeline.speech import FrameSpeech, SpeechQueue
from avatar_node.pipeline.stats import StreamCounters

from ..support.clock import run_virtual

FPS, RATE = 25, 48000
TICKS = RATE // FPS  # 1,920 output samples a frame
SPAN = SPEECH_SAMPLE_RATE // FPS  # 640 engine samples a frame


def _queue(lookahead_ms: int = 0) -> SpeechQueue:
    return SpeechQueue(MediaClock.create(FPS, RATE), lookahead_ms)


def _speech(frames: float) -> tuple[np.ndarray, np.ndarray]:
    """(output int16 at 48 kHz, engine float32 at 16 kHz) of a ramp, so every slice is recognisable."""
    n = round(frames * TICKS)
    output = (np.arange(n) % 30000 + 1).astype(np.int16)
    return output, output[::3].astype(np.float32) / 32768


# ------------------------------------------------------------------------------ SpeechQueue


def test_a_closed_turn_is_cut_into_exact_contiguous_frames_and_its_last_one_is_padded():
    queue = _queue()
    output, engine = _speech(2.5)
    turn = queue.queue_clip("t", RATE, output, engine, ())
    cut = [queue.take_frame(k, may_start=True) for k in range(4)]
    assert [f.starts_turn for f in cut] == [True, False, False, False]
    assert [f.ends_turn for f in cut] == [False, False, True, False]
    assert [f.speech_samples for f in cut] == [TICKS, TICKS, TICKS // 2, 0]
    np.testing.assert_array_equal(np.concatenate([f.audio for f in cut[:3]])[: len(output)], output)
    assert not cut[2].audio[TICKS // 2 :].any() and cut[3].turn is None
    assert turn.exhausted and queue.idle


def test_a_turn_waits_for_may_start_and_starts_on_a_frame_boundary():
    queue = _queue()
    queue.queue_clip("t", RATE, *_speech(1), ())
    assert queue.take_frame(0, may_start=False).turn is None
    assert queue.pending is not None and queue.queued_ms == 40 and queue.queued_turns == 1
    frame = queue.take_frame(1, may_start=True)
    assert frame.starts_turn and frame.ends_turn and frame.speech_samples == TICKS


def test_an_open_turn_without_audio_underruns_silently_and_goes_on_a_frame_later():
    queue = _queue()
    turn = queue.start_open_turn("live", RATE)
    output, engine = _speech(2)
    queue.append(turn, output[:TICKS], engine[:SPAN], now=0.0, chunk_s=0.04)
    first = queue.take_frame(0, may_start=True)
    gap = queue.take_frame(1, may_start=True)
    assert first.speaking and first.speech_samples == TICKS
    assert gap.underrun and not gap.speaking and not gap.audio.any() and queue.underruns == 1
    queue.append(turn, output[TICKS:], engine[SPAN:], now=0.1, chunk_s=0.04)
    queue.close(turn)
    late = queue.take_frame(2, may_start=True)
    np.testing.assert_array_equal(late.audio, output[TICKS:])  # nothing skipped: the turn shifted
    assert late.ends_turn and turn.consumed == 2 * TICKS


def test_an_open_turn_is_ready_only_with_the_look_ahead_and_the_step_gets_the_real_audio_ahead():
    queue = _queue(lookahead_ms=200)
    lookahead = SPEECH_SAMPLE_RATE // 5
    turn = queue.start_open_turn("live", RATE)
    output, engine = _speech(20)
    queue.append(turn, output[:TICKS], engine[: SPAN + lookahead - 1], now=0.0, chunk_s=0.1)
    assert queue.take_frame(0, may_start=True).underrun, "cut one engine sample short of the look-ahead"
    queue.append(turn, output[:0], engine[SPAN + lookahead - 1 : SPAN + lookahead], now=0.0, chunk_s=0.1)
    assert queue.take_frame(0, may_start=True).speaking  # the turn plays from here
    end = 3 * SPAN + lookahead  # frames 1 and 2, and the look-ahead after them
    queue.append(turn, output[TICKS:], engine[SPAN + lookahead : end - 1], now=0.1, chunk_s=0.1)
    assert not queue.has_audio_for(turn, 1, 2) and queue.frames_with_audio(1, 2) == 1
    queue.append(turn, output[:0], engine[end - 1 : end], now=0.2, chunk_s=0.1)
    assert queue.has_audio_for(turn, 1, 2) and queue.frames_with_audio(1, 2) == 2
    step = queue.take_step(1, 2, may_start=True)
    np.testing.assert_array_equal(step.engine_audio, engine[SPAN : 3 * SPAN + lookahead])


def test_clear_drops_the_playing_queued_and_open_turns_and_late_audio_for_them_is_refused():
    queue = _queue()
    playing = queue.queue_clip("a", RATE, *_speech(3), ())
    queue.take_frame(0, may_start=True)
    queued = queue.queue_clip("b", RATE, *_speech(1), ())
    open_turn = queue.start_open_turn("c", RATE)
    assert queue.clear() == [playing, queued, open_turn]
    assert queue.idle and queue.open_turn is None and queue.queued_samples == 0
    output, engine = _speech(1)
    assert not queue.append(open_turn, output, engine, now=0.0, chunk_s=0.04)
    assert queue.start_open_turn("d", RATE) is not open_turn  # a new turn may open at once


# ------------------------------------------------------------------------------ FrameBoard


def _cut(index: int, epoch: int = 0, speaking: bool = False) -> CutFrame:
    audio = np.zeros(TICKS, np.int16)
    turn = object() if speaking else None
    return CutFrame(index, epoch, FrameSpeech(audio, turn, TICKS if speaking else 0, False, False, False))  # type: ignore[arg-type]


def test_the_board_commits_in_order_and_a_rewind_discards_only_what_is_not_committed():
    board = FrameBoard()
    board.add([_cut(0), _cut(1), _cut(2, speaking=True)])
    assert board.next_cut == 3 and board.speech_ahead()
    assert board.take(0).index == 0 and board.next_send == 1
    dropped = board.rewind()
    assert [f.index for f in dropped] == [1, 2] and not board.frames
    assert board.epoch == 1 and board.next_cut == board.next_send == 1 and not board.speech_ahead()


def test_signals_wake_waiters_and_a_sticky_one_remembers_a_wake_up_nobody_waited_for():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        plain, sticky = Signal(), Signal(sticky=True)
        plain.notify()
        start = loop.time()
        await plain.wait(0.5)  # the earlier notify is forgotten: the timeout runs out
        assert loop.time() - start == pytest.approx(0.5)
        sticky.notify()
        start = loop.time()
        await sticky.wait(0.5)  # remembered: returns at once
        assert loop.time() == start
        loop.call_later(0.1, plain.notify)
        await plain.wait(10)
        assert loop.time() - start == pytest.approx(0.1)

    run_virtual(main())


# ------------------------------------------------------------------------------ LivePacer


class _Delivery:
    """Records when each frame is handed over, as the real one does after waiting for its due time."""

    def __init__(self) -> None:
        self.last_image: np.ndarray | None = None
        self.outbox = self
        self.sent: list[tuple[int, float, bool]] = []  # (index, loop time, repeated)
        self.notices: list[object] = []

    def put(self, item: object) -> None:
        self.notices.append(item)

    async def deliver(self, frame: CutFrame, wait_until_due) -> bool:  # type: ignore[no-untyped-def]
        await wait_until_due()
        self.sent.append((frame.index, asyncio.get_running_loop().time(), frame.image is None))
        if frame.image is not None:
            self.last_image = frame.image
        return True


def _pacer() -> tuple[LivePacer, FrameBoard, _Delivery, StreamCounters]:
    board, delivery, counters = FrameBoard(), _Delivery(), StreamCounters()
    counters.encode_ms_recent = 0.0
    pacer = LivePacer(board, LiveSchedule(FPS), delivery, counters, lambda now: None)  # type: ignore[arg-type]
    return pacer, board, delivery, counters


def _rendered(index: int) -> CutFrame:
    frame = _cut(index)
    frame.image = np.full((2, 2, 3), index, np.uint8)
    return frame


def test_the_pacer_delivers_frame_k_at_t0_plus_k_periods_from_the_first_picture():
    async def main() -> list[tuple[int, float, bool]]:
        loop = asyncio.get_running_loop()
        pacer, board, delivery, _ = _pacer()
        task = asyncio.ensure_future(pacer.run())
        board.add([_cut(0)])  # cut but not rendered: the first frame waits for its picture
        await asyncio.sleep(0.3)
        assert not delivery.sent
        board.frames[0].image = np.zeros((2, 2, 3), np.uint8)
        t0 = loop.time()
        board.changed()
        board.add([_rendered(k) for k in range(1, 6)])
        while len(delivery.sent) < 6:
            await asyncio.sleep(0.01)
        board.renderer_done = True
        board.changed()
        await task
        return [(k, t - t0, repeated) for k, t, repeated in delivery.sent]

    sent = run_virtual(main())
    assert [k for k, _, _ in sent] == list(range(6))
    for k, at, repeated in sent:
        assert at == pytest.approx(k / FPS, abs=1e-9) and not repeated


def test_a_frame_not_rendered_in_time_leaves_as_a_repeat_exactly_at_the_repeat_deadline():
    async def main() -> tuple[list[tuple[int, float, bool]], float, int]:
        loop = asyncio.get_running_loop()
        pacer, board, delivery, counters = _pacer()
        task = asyncio.ensure_future(pacer.run())
        t0 = loop.time()
        board.add([_rendered(0), _rendered(1), _cut(2), _rendered(3)])  # frame 2's picture never comes
        while len(delivery.sent) < 4:
            await asyncio.sleep(0.01)
        board.renderer_done = True
        board.changed()
        await task
        return [(k, t - t0, r) for k, t, r in delivery.sent], REPEAT_AFTER_S, counters.frames_skipped

    sent, repeat_after, skipped = run_virtual(main())
    assert [(k, r) for k, _, r in sent] == [(0, False), (1, False), (2, True), (3, False)]
    assert sent[2][1] == pytest.approx(2 / FPS + repeat_after, abs=1e-9)
    assert sent[3][1] == pytest.approx(2 / FPS + repeat_after, abs=1e-9)  # overdue: at once, never later
    assert skipped == 1


def test_a_rewind_wakes_the_pacer_waiting_for_an_early_frame_and_the_replacement_keeps_the_schedule():
    async def main() -> list[tuple[int, float, bool]]:
        loop = asyncio.get_running_loop()
        pacer, board, delivery, _ = _pacer()
        task = asyncio.ensure_future(pacer.run())
        t0 = loop.time()
        board.add([_rendered(0), _rendered(1), _rendered(2)])
        await asyncio.sleep(0.05)  # frame 1 is waiting for its time (0.04 - the encode lead)
        board.rewind()  # barge-in: frames 2 and later discarded (1 is already on its way)
        replacement = _rendered(2)
        replacement.image = np.full((2, 2, 3), 99, np.uint8)
        board.add([replacement])
        while len(delivery.sent) < 3:
            await asyncio.sleep(0.01)
        board.renderer_done = True
        board.changed()
        await task
        assert delivery.last_image is not None and delivery.last_image[0, 0, 0] == 99
        return [(k, t - t0, r) for k, t, r in delivery.sent]

    sent = run_virtual(main())
    assert [k for k, _, _ in sent] == [0, 1, 2]
    assert [at for _, at, _ in sent] == pytest.approx([0.0, 0.04, 0.08], abs=1e-9)
