"""Puppet mode through the real capture path: a PulseAudio source playing a recorded voice is
the user's microphone; the avatar mouths it, and the voice reaches the virtual microphone
delayed by exactly the avatar's latency."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from . import analysis
from .conftest import MicReader, assert_heard_as_spoken, locate, resample, speech_clip, write_wav
from .recording_backend import read_log
from .test_virtual_mic import FPS, H, W, engine_lag, mic_names, mouth_aperture, mouth_box_for


def test_puppet_voice_reaches_the_mic_with_the_avatars_latency_and_lips(  # type: ignore[no-untyped-def]
    pulse, node, start_cam, photo, tmp_path: Path
):
    first, rate = speech_clip("Hello, this is my own voice driving the avatar.")
    second, _ = speech_clip("And after a short pause, I carry on talking.")
    pause = np.zeros(rate, np.int16)
    voice = np.concatenate([pause[: rate // 2], first, pause, second, pause[: rate // 2]])
    wav = write_wav(tmp_path / "voice.wav", voice, rate)

    name = "puppet"
    desk_sink, desk_mic = "desk_mic_in", "desk_mic"
    cam = start_cam(
        "--target", node.target, "--puppet", "--puppet-mic", desk_mic, "--name", name,
        "--size", f"{W}x{H}", pulse=pulse, keep_frames=True,
    )
    avatar_reader = desk_reader = None
    try:
        cam.wait_for("puppet: the avatar follows desk_mic")
        cam.wait_for("connected: 127.0.0.1")
        avatar_reader = MicReader(pulse, mic_names(name)[1])
        desk_reader = MicReader(pulse, desk_mic)
        time.sleep(0.5)
        subprocess.run(["paplay", "-d", desk_sink, str(wav)], env=pulse.env, check=True, timeout=30)
        time.sleep(2.5)  # the voice comes out of the avatar's microphone its latency later
        assert cam.stop(signal.SIGTERM) == 0, cam.output()
        avatar, avatar_t0 = avatar_reader.stop()
        desk, desk_t0 = desk_reader.stop()
    finally:
        for reader in (avatar_reader, desk_reader):
            if reader is not None:
                reader.close()
    print(cam.output())

    latencies = cam.reported_latencies_ms()
    assert latencies, cam.output()
    delays = []
    for sentence in (first, second):
        clip = resample(sentence, rate)
        at_desk, desk_peak = locate(clip, desk)
        assert desk_peak > 0.99, desk_peak  # the recorded voice went into the user's microphone
        at_avatar, _ = locate(clip, avatar)
        delay = (avatar_t0 + at_avatar / analysis.RATE) - (desk_t0 + at_desk / analysis.RATE)
        print(f"sentence: the avatar's mic {delay * 1000:.0f} ms after the user's")
        delays.append(delay * 1000)
    print(f"delays {np.round(delays)} ms; reported node latency {latencies[-1]} ms")
    # The voice is held back by the avatar's latency, and that is the latency reported.
    assert all(delay > 100 for delay in delays), delays
    assert abs(delays[-1] - latencies[-1]) <= 30, (delays, latencies)
    for sentence in (first, second):  # ...and it is the voice, unaltered
        assert_heard_as_spoken(resample(sentence, rate), avatar, cam)

    # ...and it lines up with the lips on the camera.
    times, _, _, _ = read_log(str(cam.camera_log))
    frames = analysis.read_frames(cam.frames_path, W, H)
    box = mouth_box_for(photo)
    start = avatar_t0 + locate(resample(first, rate), avatar)[0] / analysis.RATE - 0.3
    end = avatar_t0 + (locate(resample(second, rate), avatar)[0] + len(resample(second, rate))) / analysis.RATE + 0.3
    during = (times >= start) & (times <= end)
    aperture = np.array([mouth_aperture(f, box) for f, keep in zip(frames, during) if keep])
    energy = analysis.energy_at(avatar, avatar_t0, times[during], 1 / FPS)
    device_lag_ms = analysis.best_lag(aperture, energy) / FPS * 1000
    engine_lag_ms = engine_lag(node.target, photo, voice, rate) / FPS * 1000
    reported_ms = float(np.median(cam.reported_offsets_ms()))
    print(f"voice trails the mouth by {device_lag_ms:.1f} ms at the devices, {engine_lag_ms:.1f} ms "
          f"from the node; reported A/V {reported_ms:+.0f} ms")
    assert abs(device_lag_ms - engine_lag_ms - reported_ms) <= 25
