"""A barge-in as a meeting sees it on the virtual camera: the pictures `avatar cam` hands the
camera device, read back and measured with the portrait engine's own mouth meter."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import numpy as np

from avatar_client.virtualcam import CamControl
from avatar_client.virtualcam.pixels import to_rgb

from . import analysis
from .recording_backend import read_log
from .test_control import LONG_TEXT
from .test_virtual_mic import H, W, mouth_aperture, mouth_box_for

FRAME_BYTES = W * H * 3 // 2  # I420


def _last_picture(path: Path) -> np.ndarray | None:
    """The newest whole frame the camera has been sent."""
    size = path.stat().st_size if path.exists() else 0
    if size < FRAME_BYTES:
        return None
    with path.open("rb") as frames:
        frames.seek((size // FRAME_BYTES - 1) * FRAME_BYTES)
        data = np.frombuffer(frames.read(FRAME_BYTES), np.uint8)
    return to_rgb(data, "I420", W, H) if data.size == FRAME_BYTES else None


def test_barge_in_shuts_the_cameras_mouth_and_it_stays_shut(  # type: ignore[no-untyped-def]
    node, start_cam, photo, tmp_path: Path, monkeypatch
):
    """Interrupted while the mouth is well open: the first camera frame after the interrupt
    shows the mouth closing (no wider than the last before), it is shut by the second, and it
    never opens again in the silence after."""
    name = "bargeface"
    cam = start_cam("--target", node.target, "--no-mic", "--name", name, "--size", f"{W}x{H}", keep_frames=True)
    cam.wait_for("connected: 127.0.0.1")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cam.frames_path is not None
    box = mouth_box_for(photo)

    async def barge_in() -> tuple[float, float, dict]:  # type: ignore[type-arg]
        async with await CamControl.connect(name) as control:
            await asyncio.sleep(1.0)
            resting = []
            while len(resting) < 10:  # the face at rest before it speaks, as the camera shows it
                picture = _last_picture(cam.frames_path)
                if picture is not None:
                    resting.append(mouth_aperture(picture, box))
                await asyncio.sleep(0.04)
            rest = float(np.median(resting))
            turn_id = await control.say(LONG_TEXT)
            said = time.monotonic()
            deadline = said + 20
            while time.monotonic() < deadline:  # interrupt while the mouth is well open
                await asyncio.sleep(0.02)
                picture = _last_picture(cam.frames_path)
                if picture is not None and time.monotonic() - said > 1.5 and mouth_aperture(picture, box) - rest > 3:
                    break
            interrupted_at = time.monotonic()
            await control.interrupt()
            finished = await control.wait_finished(turn_id, timeout=10)
            await asyncio.sleep(1.5)
            return rest, interrupted_at, finished

    try:
        rest, interrupted_at, finished = asyncio.run(barge_in())
    finally:
        assert cam.stop(signal.SIGTERM) == 0, cam.output()
    assert finished["interrupted"], finished

    times, _, _, _ = read_log(str(cam.camera_log))
    frames = analysis.read_frames(cam.frames_path, W, H)
    assert len(frames) == len(times)
    aperture = np.array([mouth_aperture(f, box) for f in frames]) - rest
    cut = int(np.searchsorted(times, interrupted_at))  # the first frame sent after the interrupt
    before, after = aperture[:cut], aperture[cut : cut + 30]
    # Until the node's first picture after the interrupt arrives, the camera repeats the last
    # one it showed (the node's round trip: one to three frames here); then, picture by picture:
    held = next(k for k in range(cut, len(frames)) if not np.array_equal(frames[k], frames[cut - 1])) - cut
    pictures = [aperture[k] for k in range(cut + held, cut + 30) if not np.array_equal(frames[k], frames[k - 1])]
    around = zip(times[cut - 3 : cut + 8] - interrupted_at, aperture[cut - 3 : cut + 8])
    print("mouth beyond rest, camera frames around the interrupt (ms after it: openness): "
          + ", ".join(f"{1000 * t:+.0f}: {a:.1f}" for t, a in around)
          + f"; the picture of the interrupt held for {held} frame(s); new pictures after: "
          + ", ".join(f"{a:.1f}" for a in pictures[:5]) + f"; most open from the 3rd frame on: {after[2:].max():.1f}")
    assert before.max() > 3.0, "the mouth never opened"
    assert len(after) == 30 and len(pictures) >= 5
    assert held <= 5, f"the camera held the picture of the interrupt for {held} frames"
    assert max(after[: held + 1]) <= max(before[-1], 1.0), "the first picture after the interrupt opens the mouth wider"
    assert pictures[1] < 1.0, "the mouth is not shut two pictures after the interrupt"
    assert after[held + 1 :].max() < 1.0, "the mouth opened again in silence"
