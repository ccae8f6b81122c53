"""The live renderer under stress: far behind schedule, with speech waiting to start, it never holds
the event loop and keeps every frame's audio."""

from __future__ import annotations

import asyncio

from avatar_node.engines.testcard import TestCardEngine
from avatar_node.pipeline import AvatarRuntime, SessionOptions

from .conftest import Received, check_one_clock, collect, tone


async def _loop_stalls(seconds: float) -> float:
    """The longest the event loop went without running a 5 ms timer, over `seconds`."""
    loop = asyncio.get_running_loop()
    worst, last, end = 0.0, loop.time(), loop.time() + seconds
    while loop.time() < end:
        await asyncio.sleep(0.005)
        now = loop.time()
        worst, last = max(worst, now - last), now
    return worst


async def test_far_behind_with_speech_waiting_the_loop_stays_free(photo):
    engine = TestCardEngine(step_delay_ms=90)  # under half of real time
    async with AvatarRuntime([engine], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb"))
        received = Received()
        reader = asyncio.create_task(collect(stream, received))
        await asyncio.sleep(1.0)  # well behind by now
        for _ in range(3):  # turns waiting to start while frames are being skipped
            await stream.push_speech(tone(0.5), 16000, end_of_turn=True)
            await stream.push_speech(tone(0.2), 16000)  # and one streamed, left open
            await stream.push_speech(tone(0.0), 16000, end_of_turn=True)
        worst = await asyncio.wait_for(_loop_stalls(2.0), 10)
        engine.step_delay_s = 0.0
        await stream.end()
        await asyncio.wait_for(reader, 30)
        await stream.aclose()
    assert worst < 0.1, f"the event loop was held for {worst * 1000:.0f} ms"
    check_one_clock(received.frames)
    assert received.stats.frames_skipped > 0
    speaking_audio = sum(len(f.audio) for f in received.frames if f.speaking)
    assert speaking_audio >= 0.95 * 3 * 0.7 * 48000  # every turn was heard


async def test_one_slow_step_at_the_start_does_not_freeze_the_picture(photo):
    # A step slowed by a busy process (an agent starting up beside the engine) swells the
    # step estimate beyond the lead; the renderer must render again to learn it was stale.
    engine = TestCardEngine(hiccups_ms=(0.0, 400.0) + (0.0,) * 10_000)
    async with AvatarRuntime([engine], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb"))
        received = Received()
        reader = asyncio.create_task(collect(stream, received))
        await asyncio.sleep(4.0)
        await stream.end()
        await asyncio.wait_for(reader, 30)
        await stream.aclose()
    last_second = received.frames[-25:]
    assert sum(f.repeated for f in last_second) <= 5, "the picture froze after one slow step"
    check_one_clock(last_second)
