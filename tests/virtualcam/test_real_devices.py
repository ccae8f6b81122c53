"""Against a real v4l2loopback device, where one exists (never on the test machines: their
kernel has no V4L2). Set AVATAR_TEST_V4L2_DEVICE=/dev/videoN to run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

DEVICE = os.environ.get("AVATAR_TEST_V4L2_DEVICE")


@pytest.mark.skipif(
    not DEVICE, reason="no v4l2loopback device here; `sudo modprobe v4l2loopback exclusive_caps=1` and "
    "set AVATAR_TEST_V4L2_DEVICE=/dev/videoN to run this against it",
)
def test_frames_reach_a_real_v4l2loopback_device_at_a_constant_rate(tmp_path):  # type: ignore[no-untyped-def]
    import av

    cam = subprocess.Popen(
        [sys.executable, "-m", "avatar_client.cli", "cam", "--device", str(DEVICE), "--sync-test", "--no-mic",
         "--size", "320x240", "--no-control"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)},
    )
    try:
        time.sleep(2.0)
        assert cam.poll() is None, cam.communicate()[0]
        times, lumas = [], []
        with av.open(str(DEVICE), format="v4l2") as capture:
            for frame in capture.decode(video=0):
                times.append(time.monotonic())
                lumas.append(float(frame.to_ndarray(format="gray").mean()))
                if times[-1] - times[0] > 4.0:
                    break
    finally:
        cam.terminate()
        output = cam.communicate(timeout=20)[0]
    assert cam.returncode == 0, output
    intervals = np.diff(times)
    assert abs(intervals.mean() - 0.04) < 0.002 and intervals.max() < 0.12, intervals
    assert max(lumas) > 200  # the flashes of the sync pattern came through
