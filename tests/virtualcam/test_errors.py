"""Errors that say what to do: no virtual camera device, a busy device, no sound server; and
the camera's pixel format as the device wants it."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from avatar_client.virtualcam import errors, pixels

from .recording_backend import read_log
from .test_virtual_mic import assert_mic_gone, mic_names


def run_avatar(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avatar_client.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="this machine has video devices")
def test_no_v4l2loopback_device_says_what_to_install_and_that_no_camera_still_gives_the_mic(tmp_path):  # type: ignore[no-untyped-def]
    line = one_error_line(run_avatar("cam", "--sync-test", "--no-mic", env={"XDG_RUNTIME_DIR": str(tmp_path)}))
    print(line)
    assert "v4l2loopback" in line and "modprobe" in line and "--no-camera" in line


def test_a_busy_camera_is_named_with_what_to_do(tmp_path):  # type: ignore[no-untyped-def]
    from .conftest import CAM_MAIN

    result = subprocess.run(
        [sys.executable, str(CAM_MAIN), "cam", "--backend", "recording", "--sync-test", "--no-mic"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "AVATAR_TEST_CAMERA_BUSY": "1", "AVATAR_TEST_CAMERA_LOG": str(tmp_path / "log"),
             "XDG_RUNTIME_DIR": str(tmp_path)},
    )
    line = one_error_line(result)
    print(line)
    assert "busy" in line and "--device" in line


def test_no_sound_server_says_how_to_start_one_or_use_no_mic(tmp_path):  # type: ignore[no-untyped-def]
    empty = tmp_path / "runtime"
    empty.mkdir(mode=0o700)
    result = run_avatar(
        "cam", "--sync-test", "--no-camera",
        env={"XDG_RUNTIME_DIR": str(empty), "PULSE_SERVER": f"unix:{empty}/nothing", "HOME": str(tmp_path)},
    )
    line = one_error_line(result)
    print(line)
    assert "PulseAudio or PipeWire" in line and "--no-mic" in line
    assert "removed the virtual microphone" not in result.stderr + result.stdout  # none was made


def test_a_missing_pulsectl_is_the_microphones_need_not_the_cameras(monkeypatch):  # type: ignore[no-untyped-def]
    from avatar_client.virtualcam import virtual_mic

    monkeypatch.setitem(sys.modules, "pulsectl", None)  # as if not installed
    with pytest.raises(errors.CamError) as raised:
        virtual_mic.VirtualMic("avatar").create()
    message = str(raised.value)
    assert message.startswith("the virtual microphone needs the 'pulsectl' package")
    assert "[virtualcam]" in message and "--no-mic" in message


def test_other_systems_are_told_what_to_install(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(errors.platform, "system", lambda: "Windows")
    assert "OBS Studio" in str(errors.no_camera_device("x")) and "--no-camera" in str(errors.no_camera_device("x"))
    monkeypatch.setattr(errors.platform, "system", lambda: "Darwin")
    assert "System Settings" in str(errors.no_camera_device("x"))


def test_without_pulseaudio_a_named_output_device_is_asked_for(monkeypatch):  # type: ignore[no-untyped-def]
    from avatar_client.virtualcam.runner import CamOptions, VirtualCam

    cam = VirtualCam(CamOptions(sync_test=True, camera=False))
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(errors.CamError, match="--audio-device 'CABLE Input'"):
        cam._open_audio()


@pytest.mark.parametrize("fmt", pixels.FORMATS)
def test_pixel_formats_round_trip(fmt):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    image = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 2, 0), 2, 1)  # 2x2 blocks
    back = pixels.to_rgb(pixels.convert(image, fmt), fmt, 32, 24)
    tolerance = 40 if fmt == "GRAY" else 6  # grey keeps only the brightness
    luma = lambda x: x.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    assert np.abs(luma(back) - luma(image)).mean() < tolerance


@pytest.mark.parametrize("fmt", ["YUYV", "NV12"])
def test_the_camera_gets_frames_in_the_format_its_device_uses(fmt, start_cam):  # type: ignore[no-untyped-def]
    cam = start_cam("--sync-test", "--no-mic", "--size", "160x120", camera_format=fmt, keep_frames=True)
    cam.wait_for("connected: sync test pattern")
    cam.wait_for("status: camera 2")  # a status line with the camera running
    assert cam.stop(signal.SIGTERM) == 0, cam.output()
    assert f"camera: test-camera (160x120 at 25 fps, {fmt})" in cam.output()
    _, formats, sizes, _ = read_log(str(cam.camera_log))
    assert set(formats) == {fmt}
    from .analysis import read_frames

    frames = read_frames(cam.frames_path, 160, 120, fmt)
    means = np.array([f.mean() for f in frames])
    first = int(np.argmax(means > 240))  # the pattern's first frame is a flash
    assert first > 0 and np.allclose(means[:first], means[0], atol=1)  # a blank picture until then
    later = means[first:]
    assert ((later > 240) | ((later > 35) & (later < 80))).all()  # white flashes or the dark pattern
