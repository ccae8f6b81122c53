"""`avatar obs` against a 16 fps engine with no --fps: the stream runs at the engine's rate, with
a constant-rate timeline, keyframes every second and the speech under it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import LIVETALK_FPS

from .conftest import decode_stream
from .test_stream import frames_published, speech_runs

pytestmark = pytest.mark.slow


def test_stream_takes_the_engines_rate_and_keeps_it(livetalk_node, start, udp_capture):  # type: ignore[no-untyped-def]
    capture = udp_capture()
    command = start(
        "--target", livetalk_node.target, "--udp", f"127.0.0.1:{capture.port}", "--size", "320x240",
        "--say", "Hello everyone, welcome to the stream.", "--duration", "8",
    )
    command.wait_for(r"turn finished", timeout=60)
    assert command.finish() == 0, command.output
    assert f"320x240 at {LIVETALK_FPS} fps" in command.output
    stream = decode_stream(capture.bytes_since(), keep_images=False)

    assert len(stream.video_pts) == frames_published(command.output), command.output
    steps = np.diff(stream.video_pts)
    assert np.allclose(steps, 1 / LIVETALK_FPS, atol=1e-3), sorted(set(np.round(steps, 4)))
    gaps = np.diff([stream.video_pts[0], *stream.keyframes, stream.video_pts[-1]])
    assert gaps.max() <= 1.0 + 1e-3, gaps
    audio_s = len(stream.audio) / stream.audio_rate
    assert abs(audio_s - len(stream.video_pts) / LIVETALK_FPS) < 0.1
    assert speech_runs(stream.audio, stream.audio_rate), "the speech is not in the stream"
