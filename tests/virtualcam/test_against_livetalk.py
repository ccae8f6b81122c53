"""`avatar cam` against a 16 fps engine with no --fps: the camera keeps its own rate (25) and
shows each of the node's 16 pictures a second until the next is due."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from tests.conftest import LIVETALK_FPS

from .recording_backend import read_log
from .test_camera_rate import FPS, H, W, check_rate

pytestmark = pytest.mark.slow


def test_camera_repeats_a_16_fps_avatar_at_its_own_rate(start_cam, livetalk_node):  # type: ignore[no-untyped-def]
    cam = start_cam("--target", livetalk_node.target, "--no-mic", "--size", f"{W}x{H}")
    connected = cam.wait_for(f"{LIVETALK_FPS} fps, engine livetalk", 60)
    time.sleep(4.0)
    assert cam.stop(signal.SIGTERM) == 0, cam.output()

    times, _, _, lumas = read_log(str(cam.camera_log))
    settled = connected + 1.0  # past the first block and the playout's prefill
    check_rate(times, settled, times[-1], "camera fed from a 16 fps avatar")
    inside = (times >= settled) & (times <= times[-1])
    seconds = times[inside][-1] - times[inside][0]
    # The tiny network's pictures differ from one frame to the next, so each change of the
    # camera's picture is one new avatar frame: 16 a second, each shown once or twice.
    changes = int(np.count_nonzero(np.diff(lumas[inside])))
    assert abs(changes / seconds - LIVETALK_FPS) <= 1.0, (changes, seconds)
