"""Both LiveKit modes against a 16 fps engine, with no fps given: the avatar is published at the
engine's rate, the voice continuously and whole."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from avatar_node.pipeline import AvatarRuntime
from tests.conftest import LIVETALK_FPS

from ..support.waits import until
from .conftest import RATE, Readback, Speech
from .test_local_mode import local_avatar
from .test_node_mode import node_avatar, node_sessions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def speak_and_check(run: Any, speech: Speech) -> None:
    """Idle, then one utterance: played whole, at the engine's rate, the voice continuous."""
    await asyncio.sleep(1.0)
    said_at = time.monotonic()
    await run.session.say("Hello there", audio=speech.frames())
    await asyncio.sleep(1.0)
    assert [f.interrupted for f in run.finished] == [False]
    assert abs(run.finished[0].playback_position - speech.seconds) < 1 / LIVETALK_FPS + 1e-3
    check_published(run.readback, said_at, speech)


def check_published(readback: Readback, since: float, speech: Speech) -> None:
    fps = readback.video_fps(since=since)
    print(f"published {fps:.2f} fps")
    assert abs(fps - LIVETALK_FPS) <= 1.0, fps  # as the portrait tests: +-1 fps of arrival jitter
    steady = [(t, a) for t, a in readback.audio if t > since - 0.3]
    samples = sum(len(a) for _, a in steady)
    wall = steady[-1][0] - steady[0][0]
    assert abs(samples / RATE - wall) < 0.15, f"{samples / RATE:.3f} s of audio in {wall:.3f} s"
    voiced = np.flatnonzero(np.abs(readback.audio_samples()) > 30)
    span = (voiced[-1] - voiced[0]) / RATE
    assert abs(span - speech.seconds) < 0.1, f"voice spans {span:.3f} s of {speech.seconds:.3f} s"


async def test_local_mode_publishes_at_the_engines_rate(photo: bytes, short_speech: Speech, livetalk_weights) -> None:
    runtime = AvatarRuntime(["livetalk"], weights_dir=str(livetalk_weights), max_sessions=1, text_to_speech=False)
    await runtime.start()
    try:
        async with local_avatar(photo, engine="livetalk", runtime=runtime, width=320, height=240) as run:
            await speak_and_check(run, short_speech)
    finally:
        await runtime.aclose()


async def test_node_mode_publishes_at_the_engines_rate(livetalk_node, photo: bytes, short_speech: Speech) -> None:
    async with node_avatar(livetalk_node, photo, engine="livetalk") as run:
        await speak_and_check(run, short_speech)
    await until(lambda: node_sessions(livetalk_node) == 0, 5, "the node session to close")
