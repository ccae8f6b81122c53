"""The camera gets frames at a constant rate in the device's format, whatever the node does:
absent at start, streaming, stalled (SIGSTOP), killed, and restarted on the same port."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from ..support.node_process import NodeProcess, loopback_node
from ..support.waits import free_port, wait_until
from .recording_backend import read_log

FPS = 25.0
PERIOD = 1 / FPS
W, H = 320, 240


def check_rate(times: np.ndarray, start: float, end: float, what: str) -> None:
    """Mean interval within 2 % of 1/fps and no gap above three intervals, in [start, end]."""
    inside = times[(times >= start) & (times <= end)]
    assert len(inside) >= 10, f"{what}: only {len(inside)} frames"
    intervals = np.diff(inside)
    mean, worst = float(intervals.mean()), float(intervals.max())
    print(f"{what}: {len(inside)} frames, mean interval {mean * 1000:.2f} ms, max {worst * 1000:.1f} ms")
    assert abs(mean - PERIOD) <= 0.02 * PERIOD, f"{what}: mean interval {mean * 1000:.2f} ms"
    assert worst <= 3 * PERIOD, f"{what}: a gap of {worst * 1000:.1f} ms"


@pytest.mark.slow
def test_constant_rate_while_node_is_absent_stalled_killed_and_restarted(start_cam):  # type: ignore[no-untyped-def]
    port = free_port()
    cam = start_cam(
        "--target", f"127.0.0.1:{port}", "--no-mic", "--size", f"{W}x{H}", "--fps", str(FPS),
        "--stall-timeout", "1.5",
    )
    node: NodeProcess | None = None
    try:
        cam.wait_for("node unreachable", 30)
        time.sleep(1.5)
        absent = (cam.wait_for("camera: test-camera"), time.monotonic())

        node = loopback_node(port)
        connected = cam.wait_for("connected: 127.0.0.1", 30)
        time.sleep(2.5)
        streaming = (connected, time.monotonic())

        node.signal(signal.SIGSTOP)
        stalled_from = time.monotonic()
        time.sleep(3.0)  # longer than --stall-timeout: the client gives the session up
        stalled = (stalled_from, time.monotonic())
        node.signal(signal.SIGCONT)
        wait_count = sum("connected: 127.0.0.1" in line for _, line in cam.lines)
        while sum("connected: 127.0.0.1" in line for _, line in cam.lines) == wait_count:
            time.sleep(0.05)
            assert time.monotonic() - stalled[1] < 30, cam.output()
        time.sleep(1.0)

        node.kill()
        killed_from = time.monotonic()
        time.sleep(2.0)
        killed = (killed_from, time.monotonic())
        node = loopback_node(port)
        restarted_from = time.monotonic()
        wait_count += 1
        while sum("connected: 127.0.0.1" in line for _, line in cam.lines) == wait_count:
            time.sleep(0.05)
            assert time.monotonic() - restarted_from < 30, cam.output()
        time.sleep(2.0)
        # In a log the status line comes every 2 s: wait for one drawn after the last reconnect.
        wait_until(lambda: int(cam.statuses()[-1]["reconnects"]) >= 2, 10, "a status line counting 2 reconnects")
        assert cam.stop(signal.SIGTERM) == 0, cam.output()
    finally:
        if node is not None:
            node.close()

    times, formats, sizes, lumas = read_log(str(cam.camera_log))
    output = cam.output()
    print(output)
    assert set(formats) == {"I420"} and set(sizes) == {W * H * 3 // 2}, (set(formats), set(sizes))
    check_rate(times, times[0], times[-1], "whole run")
    check_rate(times, *absent, "node absent at start")
    check_rate(times, *streaming, "streaming")
    check_rate(times, *stalled, "node stalled")
    check_rate(times, *killed, "node killed")
    check_rate(times, restarted_from, times[-1], "node restarted")

    # While the node is absent the camera shows the photo, not a blank picture.
    before = lumas[(times >= absent[0]) & (times <= absent[1])]
    assert np.ptp(before) == 0 and abs(before[0] - (16 + 96 * 219 / 255)) > 3, before[:3]
    assert output.count("connected: 127.0.0.1") >= 3
    assert "no frames from the node for 1.5 s" in output
    assert "retrying in" in output
