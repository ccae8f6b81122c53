"""The virtual microphone against a real PulseAudio server: it exists while `avatar cam` runs
and is gone after every way out; what it plays is what was spoken, in step with the frames."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from . import analysis
from .conftest import MicReader, NodeProcess, locate, resample, rms_db, speech_clip, wait_until, write_wav
from .recording_backend import read_log

W, H, FPS = 320, 240, 25.0


def mic_names(name: str) -> tuple[str, str]:
    return f"avatar_cam_{name}", f"avatar_mic_{name}"


def assert_mic_gone(pulse, name: str) -> None:  # type: ignore[no-untyped-def]
    sink, source = mic_names(name)
    assert source not in pulse.source_names() and sink not in pulse.sink_names()
    assert not [m for m in pulse.avatar_modules() if f"_{name} " in m + " "], pulse.avatar_modules()


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT twice"])
def test_mic_exists_while_running_and_is_gone_after_a_signal(pulse, start_cam, how):  # type: ignore[no-untyped-def]
    name = how.replace(" ", "").lower()
    sink, source = mic_names(name)
    defaults = pulse.pactl("get-default-sink").strip(), pulse.pactl("get-default-source").strip()
    cam = start_cam("--sync-test", "--name", name, "--size", f"{W}x{H}", pulse=pulse)
    cam.wait_for("connected: sync test pattern")
    assert source in pulse.source_names() and sink in pulse.sink_names()
    listing = pulse.pactl("list", "sources")
    assert f"Description: Avatar microphone ({name})" in listing
    # Creating the devices leaves the user's own defaults alone.
    assert (pulse.pactl("get-default-sink").strip(), pulse.pactl("get-default-source").strip()) == defaults
    control = pulse.runtime_dir / "avatar-cam" / f"{name}.json"
    assert control.exists()

    cam.process.send_signal(signal.SIGINT if "INT" in how else signal.SIGTERM)
    if how == "SIGINT twice":  # a second Ctrl-C while cleaning up must not cut the cleanup short
        time.sleep(0.05)
        cam.process.send_signal(signal.SIGINT)
    code = cam.wait(20)
    assert code == (0 if how == "SIGTERM" else 130), cam.output()
    assert_mic_gone(pulse, name)
    assert not control.exists()
    assert "Traceback" not in cam.output()


def test_normal_exit_after_speech_and_what_was_heard(pulse, node, start_cam, tmp_path: Path):  # type: ignore[no-untyped-def]
    """--speak with --exit-when-done: the speech read back from the microphone is the speech
    that was sent (cross-correlation peak, level), and the microphone is gone afterwards."""
    samples, rate = speech_clip("Good morning everyone. Thank you for joining the meeting today.")
    wav = write_wav(tmp_path / "speech.wav", samples, rate)
    name = "speech"
    reader = None
    try:
        cam = start_cam(
            "--target", node.target, "--speak", str(wav), "--exit-when-done", "--name", name,
            "--size", f"{W}x{H}", pulse=pulse,
        )
        cam.wait_for("microphone:")
        reader = MicReader(pulse, mic_names(name)[1])
        code = cam.wait(60)
        recording, _ = reader.stop()
    finally:
        if reader is not None:
            reader.close()
    assert code == 0, cam.output()
    assert_mic_gone(pulse, name)

    spoken = resample(samples, rate)
    lag, peak = locate(spoken, recording)
    heard = recording[lag : lag + len(spoken)]
    print(f"correlation peak {peak:.3f}, level {rms_db(heard):.2f} dB heard vs {rms_db(spoken):.2f} dB spoken")
    assert peak > 0.95, peak
    assert abs(rms_db(heard) - rms_db(spoken)) < 1.0


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
