"""The live start rule, to the frame: which frame a streamed turn starts on, worked out from
the rule in schedule.py and checked against what a live stream does."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from avatar_node.pipeline import AvatarRuntime, SessionOptions
from avatar_node.pipeline.schedule import START_MARGIN_S, LiveSchedule, earliest_start

from .conftest import Received, collect, tone


def test_the_first_frame_due_at_or_after_a_time_is_that_frame_on_a_boundary_and_the_next_after_it():
    schedule = LiveSchedule(25.0)
    schedule.start(100.0, 7)  # frame 7 left at t=100: frame k is due at 100 + (k - 7) * 0.04
    assert schedule.due(9, 0.0, 0) == pytest.approx(100.08)
    assert schedule.first_due_at_or_after(schedule.due(9, 0.0, 0)) == 9  # exactly due: that frame
    assert schedule.first_due_at_or_after(100.08 - 1e-6) == 9
    assert schedule.first_due_at_or_after(100.08 + 1e-6) == 10
    assert schedule.first_due_at_or_after(100.0) == 7
    assert schedule.first_due_at_or_after(0.0) == 0  # never before the first frame


def test_earliest_start_is_the_first_arrival_plus_a_step_the_look_ahead_and_the_margin():
    rate = 48000
    turn = SimpleNamespace(closed=False, unplayed_samples=int(0.3 * rate), first_arrival=10.0, largest_chunk_s=0.02)
    need = 0.04 + 0.2 + 0.005 + START_MARGIN_S  # a step, the look-ahead, rendering, the margin
    # A 1x sender (0.3 s sent in 20 ms chunks by t=10.3): its first audio fixes the start.
    assert earliest_start(turn, 10.3, rate, 0.04, 0.2, 0.005) == pytest.approx(10.0 + need)
    # A sender ahead of real time: what is here covers the wait, so it starts sooner.
    turn.unplayed_samples = rate
    assert earliest_start(turn, 10.3, rate, 0.04, 0.2, 0.005) == pytest.approx(10.3 + need + 0.02 - 1.0)
    # Everything at once: no earlier than a 1x sender.
    turn.largest_chunk_s = 1.0
    assert earliest_start(turn, 10.0, rate, 0.04, 0.2, 0.005) == pytest.approx(10.0 + need)
    turn.unplayed_samples = int(0.2 * rate)  # not yet a step and its look-ahead
    assert earliest_start(turn, 10.0, rate, 0.04, 0.2, 0.005) == math.inf
    turn.closed = True
    assert earliest_start(turn, 10.0, rate, 0.04, 0.2, 0.005) == -math.inf


async def test_a_streamed_turn_starts_on_the_first_frame_the_rule_allows(photo):
    async with AvatarRuntime(["testcard"], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb", width=160, height=120))
        received = Received()
        reader = asyncio.create_task(collect(stream, received))
        while len(received.frames) < 12:  # idle frames flow and the schedule is fixed
            await asyncio.sleep(0.01)
        await stream.push_speech(tone(2.0), 16000, turn_id="streamed")  # open: the rule applies
        turn = stream.parts.speech.open_turn
        render_s = stream.counters.step_typical(1)
        while not any(f.speaking for f in received.frames):
            await asyncio.sleep(0.01)
        schedule = stream.parts.schedule
        await stream.end(discard_pending=True)
        await reader
        await stream.aclose()
    assert turn is not None and turn.first_arrival is not None
    first = next(f.index for f in received.frames if f.speaking)
    # Sent whole, so the rule gives its first arrival + one step + no look-ahead + the margin.
    start = turn.first_arrival + 0.04 + render_s + START_MARGIN_S
    allowed = {schedule.first_due_at_or_after(start + d) for d in (-0.002, 0.0, 0.002)}  # render_s drifts
    assert first in allowed, (first, allowed, start - schedule.due(first, 0.0, 0))
