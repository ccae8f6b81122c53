"""The speech queue hands an engine each turn's audio as it arrives (TurnAudio): all of it,
once, in order, placed on the step's frames, with the turn's end marked."""

from __future__ import annotations

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE
from avatar_node.media.audio import to_int16
from avatar_node.media.clock import MediaClock
from avatar_node.pipeline.conditioning import ConditioningCutter
from avatar_node.pipeline.listen import ListenTrack
from avatar_node.pipeline.speech import SpeechQueue

FPS = 16
SPAN = SPEECH_SAMPLE_RATE // FPS


def test_an_open_turn_is_handed_over_as_it_arrives_and_a_queued_one_whole():
    clock = MediaClock.create(FPS, SPEECH_SAMPLE_RATE)
    queue = SpeechQueue(clock, lookahead_ms=250)
    cutter = ConditioningCutter(clock, queue, ListenTrack(live=False))
    rng = np.random.default_rng(0)
    spoken = (rng.standard_normal(50 * SPAN) * 0.1).astype(np.float32)
    queued = (rng.standard_normal(30 * SPAN + 123) * 0.1).astype(np.float32)

    turn = queue.start_open_turn("live", SPEECH_SAMPLE_RATE)
    sent = 0

    def arrive(samples: int) -> None:
        nonlocal sent
        piece = spoken[sent : sent + samples]
        queue.append(turn, to_int16(piece), piece, now=0.0, chunk_s=len(piece) / SPEECH_SAMPLE_RATE)
        sent += len(piece)

    arrive(17 * SPAN)  # the first step and its look-ahead, and a little more
    handed, index, seen = [], 0, []
    for n, more in [(9, 12 * SPAN), (12, 21 * SPAN), (12, 0)]:
        cond, _ = cutter.cut(index, n, may_start=True)
        audio = cond.turn_audio
        assert audio is not None and audio.turn == turn.serial and not audio.complete
        assert audio.offset == index * SPAN  # the turn started at frame 0
        assert audio.start == sum(map(len, handed))
        handed.append(audio.arrived)
        seen.append(len(audio.arrived))
        index += n
        arrive(more)
    assert seen == [17 * SPAN, 12 * SPAN, 21 * SPAN]  # everything that arrived, once
    queue.close(turn)
    queue.queue_clip("next", SPEECH_SAMPLE_RATE, to_int16(queued), queued, ())
    while True:  # play the first turn out; the second starts inside a step
        cond, _ = cutter.cut(index, 12, may_start=True)
        index += 12
        audio = cond.turn_audio
        assert audio is not None
        if audio.turn == turn.serial:
            handed.append(audio.arrived)
            continue
        break
    np.testing.assert_array_equal(np.concatenate(handed), spoken)
    # The queued turn: whole at once, complete, placed where it starts inside the step.
    assert audio.complete and audio.start == 0
    np.testing.assert_array_equal(audio.arrived, queued)
    step_start = index - 12
    assert step_start < 50 < index  # the first turn lasts 50 frames exactly
    assert audio.offset == (step_start - 50) * SPAN  # negative: the turn starts inside the step
    cond, _ = cutter.cut(index, 12, may_start=True)
    assert cond.turn_audio is not None and cond.turn_audio.arrived.size == 0 and cond.turn_audio.offset == (index - 50) * SPAN
