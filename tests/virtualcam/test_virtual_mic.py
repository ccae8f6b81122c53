"""The virtual microphone against a real PulseAudio server: it exists while `avatar cam` runs
and is gone after every way out; what it plays is what was spoken, in step with the frames."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from . import analysis
from ..support.node_process import loopback_node
from ..support.waits import wait_until
from .conftest import (
    MicReader,
    assert_heard_as_spoken,
    resample,
    speech_clip,
    stop_process,
    write_wav,
)
from .recording_backend import read_log

W, H, FPS = 320, 240, 25.0


def mic_names(name: str) -> tuple[str, str]:
    return f"avatar_cam_{name}", f"avatar_mic_{name}"


def streams(pulse) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """The sinks programs play to and the sources they record from, by name (the server's own
    module streams, such as a remapped source reading its master, left out)."""

    def rows(kind: str) -> list[list[str]]:
        return [line.split("\t") for line in pulse.pactl("list", "short", kind).splitlines()]

    sinks = {row[0]: row[1] for row in rows("sinks")}
    sources = {row[0]: row[1] for row in rows("sources")}
    playing = [sinks.get(row[1], "?") for row in rows("sink-inputs") if row[2] != "-"]
    recording = [sources.get(row[1], "?") for row in rows("source-outputs") if row[2] != "-"]
    return sorted(playing), sorted(recording)


def assert_mic_gone(pulse, name: str) -> None:  # type: ignore[no-untyped-def]
    sink, source = mic_names(name)
    assert source not in pulse.source_names() and sink not in pulse.sink_names()
    assert not [m for m in pulse.avatar_modules() if f"_{name} " in m + " "], pulse.avatar_modules()


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT twice"])
def test_mic_exists_while_running_and_is_gone_after_a_signal(pulse, start_cam, how):  # type: ignore[no-untyped-def]
    name = how.replace(" ", "").lower()
    sink, source = mic_names(name)
    defaults = pulse.pactl("get-default-sink").strip(), pulse.pactl("get-default-source").strip()
    # Something the user is listening to, and something recording the user's microphone, both
    # on the default devices (so they follow a change of default).
    music = subprocess.Popen(["pacat", "--playback", "--raw", "/dev/zero"], env=pulse.env)
    meeting = subprocess.Popen(["parec", "--raw"], env=pulse.env, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: streams(pulse) == (["speakers"], ["desk_mic"]), 10, "the user's streams")
        cam = start_cam("--sync-test", "--name", name, "--size", f"{W}x{H}", pulse=pulse)
        cam.wait_for("connected: sync test pattern")
        assert source in pulse.source_names() and sink in pulse.sink_names()
        listing = pulse.pactl("list", "sources")
        assert f"Description: Avatar microphone ({name})" in listing
        # Creating the devices leaves the user's defaults, and what is playing or recording, alone.
        assert (pulse.pactl("get-default-sink").strip(), pulse.pactl("get-default-source").strip()) == defaults
        playing, recording = streams(pulse)
        assert "speakers" in playing and recording.count("desk_mic") == 1, (playing, recording)
    finally:
        stop_process(music)
        stop_process(meeting)
    control = pulse.runtime_dir / "avatar-cam" / f"{name}.json"
    assert control.exists()

    cam.process.send_signal(signal.SIGINT if "INT" in how else signal.SIGTERM)
    if how == "SIGINT twice":  # an impatient second Ctrl-C must not cut the cleanup short
        time.sleep(0.01)
        cam.process.send_signal(signal.SIGINT)
    code = cam.wait(20)
    # After the cleanup, a second Ctrl-C may end the process by the signal itself.
    expected = {0} if how == "SIGTERM" else {130, -signal.SIGINT} if how == "SIGINT twice" else {130}
    assert code in expected, cam.output()
    assert_mic_gone(pulse, name)
    assert not control.exists()
    assert "Traceback" not in cam.output()


def test_normal_exit_after_speech_heard_as_spoken_and_in_step_with_the_lips(  # type: ignore[no-untyped-def]
    pulse, node, start_cam, photo, tmp_path: Path
):
    """--speak with --exit-when-done: the speech read back from the microphone is the speech
    that was sent (cross-correlation peak, level); it lines up with the mouth in the camera
    frames as the status line says; and the microphone is gone afterwards."""
    samples, rate = speech_clip(
        "Good morning everyone. Thank you for joining the meeting today. Let us begin with the news."
    )
    # A second of silence first: the recorder can only start once the camera has made the
    # microphone, and on a loaded machine it may start after the avatar begins to talk.
    samples = np.concatenate([np.zeros(rate, samples.dtype), samples])
    wav = write_wav(tmp_path / "speech.wav", samples, rate)
    name = "speech"
    reader = None
    try:
        cam = start_cam(
            "--target", node.target, "--speak", str(wav), "--exit-when-done", "--name", name,
            "--size", f"{W}x{H}", pulse=pulse, keep_frames=True,
        )
        cam.wait_for("microphone:")
        reader = MicReader(pulse, mic_names(name)[1])
        code = cam.wait(60)
        recording, t0 = reader.stop()
    finally:
        if reader is not None:
            reader.close()
    assert code == 0, cam.output()
    assert_mic_gone(pulse, name)
    print(cam.output())

    spoken = resample(samples, rate)
    lag = assert_heard_as_spoken(spoken, recording, cam)

    # In step with the lips: how far the speech energy heard trails the mouth opening seen on
    # the camera, against the same measure taken straight from the node (the engine's own
    # articulation lead), differs by the A/V offset the status line reported.
    times, _, _, _ = read_log(str(cam.camera_log))
    frames = analysis.read_frames(cam.frames_path, W, H)
    box = mouth_box_for(photo)
    speaking = (times >= t0 + lag / analysis.RATE - 0.5) & (times <= t0 + (lag + len(spoken)) / analysis.RATE + 0.5)
    aperture = np.array([mouth_aperture(f, box) for f, keep in zip(frames, speaking) if keep])
    energy = analysis.energy_at(recording, t0, times[speaking], 1 / FPS)
    device_lag_ms = analysis.best_lag(aperture, energy) / FPS * 1000
    engine_lag_ms = engine_lag(node.target, photo, samples, rate) / FPS * 1000
    reported = cam.reported_offsets_ms()
    reported_ms = float(np.median(reported))
    print(f"speech trails the mouth by {device_lag_ms:.1f} ms at the devices, {engine_lag_ms:.1f} ms from "
          f"the node; reported A/V offset {reported}")
    assert abs(reported_ms) <= 12, reported
    assert abs(device_lag_ms - engine_lag_ms - reported_ms) <= 25


def mouth_box_for(photo: bytes) -> tuple[int, int, int, int]:
    from avatar_node.engines.base import StreamOptions
    from avatar_node.engines.portrait import PortraitEngine
    from avatar_node.engines.portrait.evaluation import mouth_box

    return mouth_box(PortraitEngine().prepare(photo), StreamOptions(W, H, FPS))


def mouth_aperture(frame: np.ndarray, box: tuple[int, int, int, int]) -> float:
    from avatar_node.engines.portrait.evaluation import mouth_aperture as aperture

    return aperture(frame, box)


def engine_lag(target: str, photo: bytes, samples: np.ndarray, rate: int) -> float:
    """The same lag measured on frames and audio straight from the node (render mode)."""
    from avatar_client import AsyncAvatarClient

    async def render() -> tuple[list[np.ndarray], list[np.ndarray]]:
        async with AsyncAvatarClient(target) as client:
            session = await client.start_session(image=photo, width=W, height=H, fps=FPS, mode="render")
            await session.send_audio(samples, rate, end_of_turn=True)
            await session.end()
            images, audio = [], []
            async for media in session.frames():
                images.append(media.video.image)
                audio.append(media.audio)
            return images, audio

    images, audio = asyncio.run(render())
    box = mouth_box_for(photo)
    aperture = np.array([mouth_aperture(f, box) for f in images])
    energy = np.array([np.sqrt(np.mean((a.astype(np.float64) / 32768) ** 2)) if a.size else 0.0 for a in audio])
    return analysis.best_lag(aperture, energy)


@pytest.mark.parametrize("offset_ms", [0, 120])
def test_flash_and_beep_reach_the_devices_together(pulse, start_cam, offset_ms):  # type: ignore[no-untyped-def]
    """The sync test pattern: each flash reaches the camera as its beep is heard from the
    microphone (or `--av-offset-ms` later), and the status line reports that offset."""
    name = f"sync{offset_ms}"
    cam = start_cam(
        "--sync-test", "--name", name, "--size", f"{W}x{H}", "--av-offset-ms", str(offset_ms), pulse=pulse,
    )
    cam.wait_for("microphone:")
    reader = MicReader(pulse, mic_names(name)[1])
    try:
        connected = cam.wait_for("connected: sync test pattern")
        time.sleep(4.5)
        reported_from = len(cam.statuses())
        time.sleep(2.1)
    finally:
        assert cam.stop(signal.SIGTERM) == 0, cam.output()
        recording, t0 = reader.stop()
    times, _, _, lumas = read_log(str(cam.camera_log))
    flashes = analysis.flash_times(times, lumas)
    beeps = analysis.beep_onsets(recording, t0)
    offsets = analysis.paired_offsets(flashes[flashes > connected + 2.5], beeps)  # once the phase lock settled
    reported = cam.reported_offsets_ms(since=reported_from)
    measured = 1000 * float(np.median(offsets))
    print(f"flash->beep offsets (ms): {np.round(offsets * 1000, 1)}; reported {reported}")
    assert len(offsets) >= 4, (flashes, beeps, cam.output())
    assert abs(measured - offset_ms) <= 10, measured
    assert np.all(np.abs(offsets * 1000 - offset_ms) <= 20), offsets  # within half a frame, every time
    assert reported and all(abs(r - measured) <= 8 for r in reported), (reported, measured)


def test_a_killed_run_leaves_devices_that_the_next_run_removes(pulse, start_cam):  # type: ignore[no-untyped-def]
    """SIGKILL cannot be caught: the devices stay, marked with the dead owner's pid, and the
    next run recognises and removes them before making its own."""
    name = "killed"
    sink, source = mic_names(name)
    first = start_cam("--sync-test", "--no-camera", "--name", name, pulse=pulse)
    first.wait_for("connected: sync test pattern")
    first.process.kill()
    first.wait(10)
    assert source in pulse.source_names() and sink in pulse.sink_names()

    second = start_cam("--sync-test", "--no-camera", "--name", name, pulse=pulse)
    second.wait_for("connected: sync test pattern")
    assert f"left behind by an earlier run (pid {first.process.pid})" in second.output()
    assert pulse.source_names().count(source) == 1 and pulse.sink_names().count(sink) == 1
    assert second.stop(signal.SIGTERM) == 0, second.output()
    assert_mic_gone(pulse, name)


def test_a_name_in_use_by_a_running_cam_is_refused(pulse, start_cam):  # type: ignore[no-untyped-def]
    name = "taken"
    first = start_cam("--sync-test", "--no-camera", "--name", name, pulse=pulse)
    first.wait_for("connected: sync test pattern")
    second = start_cam("--sync-test", "--no-camera", "--name", name, "--no-control", pulse=pulse)
    assert second.wait(20) == 1
    assert f"in use by another `avatar cam` (pid {first.process.pid})" in second.output()
    assert "Traceback" not in second.output()
    assert mic_names(name)[1] in pulse.source_names()  # the running one keeps its microphone
    assert first.stop(signal.SIGTERM) == 0
    assert_mic_gone(pulse, name)


def test_the_mic_stays_while_the_node_is_gone_and_goes_with_the_command(pulse, start_cam):  # type: ignore[no-untyped-def]
    """The node crashing is not an exit: the meeting keeps its microphone (and camera) while
    the command reconnects; the devices go when the command ends."""
    name = "nodecrash"
    own_node = loopback_node()
    try:
        cam = start_cam("--target", own_node.target, "--name", name, "--size", f"{W}x{H}", pulse=pulse)
        cam.wait_for("connected: 127.0.0.1")
        own_node.kill()
        cam.wait_for("node unreachable")
        time.sleep(1.0)
        assert cam.process.poll() is None
        assert mic_names(name)[1] in pulse.source_names()
        assert cam.stop(signal.SIGTERM) == 0, cam.output()
    finally:
        own_node.close()
    assert_mic_gone(pulse, name)


def test_an_error_after_the_devices_exist_still_removes_them(pulse, node, start_cam):  # type: ignore[no-untyped-def]
    """A failure that ends the command (here the node refuses an unknown avatar id) takes the
    same way out as a signal, with one line saying why."""
    name = "refused"
    cam = start_cam("--target", node.target, "--avatar-id", "portrait-0000", "--name", name, pulse=pulse)
    assert cam.wait(30) == 1, cam.output()
    errors = [line for line in cam.output().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refused the session" in errors[0], cam.output()
    assert "Traceback" not in cam.output()
    assert_mic_gone(pulse, name)
