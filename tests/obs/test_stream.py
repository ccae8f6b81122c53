"""The published stream itself, read back from UDP: what OBS (or anyone) receives."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from avatar_obs import ControlClient

from ..support.waits import free_port
from .conftest import decode_stream, voiced, write_wav

FPS = 25
SIZE = "320x240"


def frames_published(output: str) -> int:
    return int(re.search(r"stopped: (\d+) frames published", output).group(1))  # type: ignore[union-attr]


def speech_runs(
    audio: np.ndarray, rate: int, window_s: float = 0.05, floor: float = 0.02
) -> list[tuple[float, float]]:
    """(start, end) in seconds of the stretches where the audio is loud."""
    hop = round(rate * window_s)
    levels = np.array([np.sqrt(np.mean(audio[i : i + hop] ** 2)) for i in range(0, len(audio) - hop, hop)])
    loud = levels > floor * (np.abs(audio).max() or 1.0) * 4
    runs, start = [], None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start >= 3:
                runs.append((start * window_s, i * window_s))
            start = None
    if start is not None:
        runs.append((start * window_s, len(loud) * window_s))
    merged: list[tuple[float, float]] = []
    for run in runs:  # syllable dips inside one utterance are not pauses
        if merged and run[0] - merged[-1][1] < 0.4:
            merged[-1] = (merged[-1][0], run[1])
        else:
            merged.append(run)
    return merged


def test_udp_stream_has_constant_frame_rate_regular_keyframes_and_the_speech(node, start, udp_capture):
    capture = udp_capture()
    command = start(
        "--target",
        node.target,
        "--udp",
        f"127.0.0.1:{capture.port}",
        "--size",
        SIZE,
        "--say",
        "Hello everyone, welcome to the stream.",
        "--duration",
        "9",
    )
    command.wait_for(r"turn finished", timeout=30)
    joined_at = time.monotonic()
    assert command.finish() == 0, command.output
    sent = frames_published(command.output)
    stream = decode_stream(capture.bytes_since())

    assert stream.codecs == ("h264", "aac")
    # Every frame arrived and decodes; timestamps step exactly one frame: constant frame rate.
    assert len(stream.video_pts) == sent, command.output
    steps = np.diff(stream.video_pts)
    assert np.allclose(steps, 1 / FPS, atol=1e-3), sorted(set(np.round(steps, 4)))
    # A keyframe at least every second, so a player joining at any moment shows a picture in 1 s.
    gaps = np.diff([stream.video_pts[0], *stream.keyframes, stream.video_pts[-1]])
    assert gaps.max() <= 1.0 + 1e-3, gaps
    assert stream.images[0].std() > 20  # a picture from the very first frame (the photo), not black
    # The audio covers the video, without holes, and carries the speech.
    audio_s = len(stream.audio) / stream.audio_rate
    video_s = len(stream.video_pts) / FPS
    assert abs(audio_s - video_s) < 0.1, (audio_s, video_s)
    turn_s = int(re.search(r"turn finished \((\d+) ms\)", command.output).group(1)) / 1000  # type: ignore[union-attr]
    runs = speech_runs(stream.audio, stream.audio_rate)
    assert runs and abs((runs[-1][1] - runs[0][0]) - turn_s) < 0.5, (runs, turn_s)
    quiet = stream.audio[round((runs[-1][1] + 0.3) * stream.audio_rate) :]
    assert quiet.size and np.abs(quiet).max() < 0.01  # idle after the turn is silence

    # Joining later: a decoder starting on a stream cut mid-way shows a picture within a second.
    late = capture.bytes_since(joined_at - 3.0)
    container = av.open(io.BytesIO(late), format="mpegts")
    first_packet = first_picture = None
    with container:
        for packet in container.demux(video=0):
            if packet.pts is None:
                continue
            t = float(packet.pts * packet.time_base)
            first_packet = t if first_packet is None else first_packet
            try:
                if packet.decode():
                    first_picture = t
                    break
            except av.error.InvalidDataError:
                continue
    assert first_packet is not None and first_picture is not None
    assert first_picture - first_packet <= 1.0 + 1e-3


def test_node_unreachable_keeps_the_stream_alive_and_reconnects(start, udp_capture):
    server = pytest.importorskip("avatar_node.server")
    capture = udp_capture()
    port = free_port()
    command = start(
        "--target",
        f"127.0.0.1:{port}",
        "--udp",
        f"127.0.0.1:{capture.port}",
        "--size",
        SIZE,
        "--say",
        "I am back.",
    )
    command.wait_for(rf"cannot start a session on the node at 127\.0\.0\.1:{port}.*retrying", timeout=20)
    time.sleep(2.0)
    assert capture.received > 20_000  # still frames (the photo) go out while the node is away

    node = server.start_background_node(server.NodeConfig(host="127.0.0.1", port=port, max_sessions=2))
    try:
        command.wait_for(r"is back; the avatar is live again", timeout=30)
        command.wait_for(r"turn finished", timeout=30)
        mark = len(command.lines)
    finally:
        node.stop(grace_s=0.5)
    command.wait_for(r"ended the session|lost the node|no frames from", timeout=20, start=mark)
    before = capture.received
    time.sleep(2.0)
    assert capture.received > before + 20_000  # the node is gone again, the stream is not
    assert command.process.poll() is None
    assert command.stop() == 0, command.output
    assert "Traceback" not in command.output

    stream = decode_stream(capture.bytes_since(), keep_images=False)
    steps = np.diff(stream.video_pts)
    # One unbroken timeline through both outages: never backwards, never a hole.
    assert np.allclose(steps, 1 / FPS, atol=1e-3), sorted(set(np.round(steps, 4)))
    # Audio without holes through the still frames too (silence), so it never drifts from the video.
    audio_s, video_s = len(stream.audio) / stream.audio_rate, len(stream.video_pts) / FPS
    assert abs(audio_s - video_s) < 0.1, (audio_s, video_s)
    assert len(speech_runs(stream.audio, stream.audio_rate)) == 1


def test_the_host_s_microphone_drives_the_avatar(node, start, udp_capture, pulse_audio, tmp_path):
    rate = 48_000
    pause = np.zeros(round(1.5 * rate), np.int16)
    speech = np.concatenate([voiced(1.5), pause, voiced(1.5, pitch_hz=190)])
    capture = udp_capture()
    command = start(
        "--target",
        node.target,
        "--udp",
        f"127.0.0.1:{capture.port}",
        "--size",
        SIZE,
        "--mic",
        env=pulse_audio.env,
    )  # the default microphone: the PulseAudio source the host set
    command.wait_for(r"listening to the default PulseAudio source")
    time.sleep(0.5)
    pulse_audio.play(write_wav(tmp_path / "host.wav", speech, rate))  # the host talks
    first = command.wait_for(r"turn finished \((\d+) ms\)", timeout=30)
    command.wait_for(r"turn finished \((\d+) ms\)", timeout=30, start=command.lines.index(first.string) + 1)
    assert command.stop() == 0, command.output
    stream = decode_stream(capture.bytes_since(), keep_images=False)
    runs = speech_runs(stream.audio, stream.audio_rate)
    assert len(runs) == 2 and all(1.2 < end - begin < 2.0 for begin, end in runs), runs
    # What OBS gets is the host's voice itself, in step with the lips (pitch 150 Hz, then 190 Hz).
    for (begin, end), pitch in zip(runs, (150, 190)):
        part = stream.audio[round(begin * stream.audio_rate) : round(end * stream.audio_rate)]
        spectrum = np.abs(np.fft.rfft(part * np.hanning(part.size)))
        freqs = np.fft.rfftfreq(part.size, 1 / stream.audio_rate)
        band = (freqs > 100) & (freqs < 260)
        assert abs(freqs[band][np.argmax(spectrum[band])] - pitch) < 5


def test_a_file_played_as_the_microphone_drives_the_avatar(node, start, udp_capture, tmp_path):
    rate = 48_000
    pause = np.zeros(round(1.5 * rate), np.int16)
    speech = np.concatenate([pause[: rate // 2], voiced(1.5), pause, voiced(1.5, pitch_hz=190), pause])
    wav = write_wav(tmp_path / "host.wav", speech, rate)
    capture = udp_capture()
    control = free_port()
    command = start(
        "--target",
        node.target,
        "--udp",
        f"127.0.0.1:{capture.port}",
        "--size",
        SIZE,
        "--mic",
        str(wav),
        "--control-port",
        str(control),
    )
    command.wait_for(r"listening to the file")
    first = command.wait_for(r"turn finished \((\d+) ms\)", timeout=30)
    second = command.wait_for(
        r"turn finished \((\d+) ms\)", timeout=30, start=command.lines.index(first.string) + 1
    )
    command.wait_for(r"the file .* ended", timeout=30)
    # A chat bot's clip through the local control, after the host stopped talking.
    mark = len(command.lines)
    clip = write_wav(tmp_path / "bot.wav", voiced(0.8, pitch_hz=230), rate)
    assert abs(ControlClient(f"http://127.0.0.1:{control}").speak(clip) - 0.8) < 0.01
    bot = command.wait_for(r"turn finished \((\d+) ms\)", timeout=15, start=mark)
    assert 700 <= int(bot.group(1)) <= 1100, command.output
    assert command.stop() == 0, command.output
    # Two utterances with a pause between: two turns, each about as long as what was said.
    for turn in (first, second):
        assert 1400 <= int(turn.group(1)) <= 2600, command.output
    stream = decode_stream(capture.bytes_since(), keep_images=False)
    runs = speech_runs(stream.audio, stream.audio_rate)
    assert len(runs) == 3, runs
    assert all(1.2 < end - begin < 2.0 for begin, end in runs[:2]), runs
    assert 0.9 < runs[1][0] - runs[0][1] < 2.1, runs  # the host's pause (1.5 s), give or take turn start-up
    assert 0.6 < runs[2][1] - runs[2][0] < 1.0, runs


def test_rtmp_publishes_h264_and_aac_of_the_right_duration(start, nginx, tmp_path):
    # No --target: the command runs its own node, as a host trying it first would.
    clip = write_wav(tmp_path / "clip.wav", voiced(1.5), 48_000)
    command = start("--rtmp", nginx.url("readback"), "--size", SIZE, "--speak", str(clip), "--duration", "8")
    assert command.finish() == 0, command.output
    assert "starting a local node" in command.output
    sent = frames_published(command.output)
    time.sleep(0.5)  # nginx closes the recording when the publisher leaves
    records = sorted(nginx.records.glob("readback*.flv"))
    assert len(records) == 1, records
    stream = decode_stream(records[0].read_bytes(), fmt="flv", keep_images=False)
    assert stream.codecs == ("h264", "aac")
    assert len(stream.video_pts) == sent, command.output
    assert np.allclose(np.diff(stream.video_pts), 1 / FPS, atol=1.5e-3)  # FLV keeps milliseconds
    video_s = sent / FPS
    audio_s = len(stream.audio) / stream.audio_rate
    assert abs(audio_s - video_s) < 0.1, (audio_s, video_s)
    assert abs(stream.video_pts[-1] - stream.video_pts[0] + 1 / FPS - video_s) < 0.01
    runs = speech_runs(stream.audio, stream.audio_rate)
    assert len(runs) == 1 and 1.3 < runs[0][1] - runs[0][0] < 1.8, runs  # the clip, said once


def test_a_node_that_stalls_mid_session_is_bridged_and_rejoined_at_a_keyframe(start, udp_capture):
    """The node freezes for 1.6 s (SIGSTOP), then goes on mid-GOP: still frames bridge the gap and
    its frames are taken again only from a keyframe, so every frame sent still decodes."""
    port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "avatar_node.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        capture = udp_capture()
        command = start("--target", f"127.0.0.1:{port}", "--udp", f"127.0.0.1:{capture.port}", "--size", SIZE)
        command.wait_for(r"publishing MPEG-TS")
        deadline = time.monotonic() + 30
        while capture.received < 150_000 and time.monotonic() < deadline:  # node frames flowing
            time.sleep(0.2)
        time.sleep(2.0)
        node.send_signal(signal.SIGSTOP)
        time.sleep(1.6)
        node.send_signal(signal.SIGCONT)
        command.wait_for(r"no frames from the node .* showing a still picture", timeout=10)
        time.sleep(3.0)
        assert command.stop() == 0, command.output
    finally:
        node.send_signal(signal.SIGCONT)
        node.terminate()
        node.wait(15)
    sent = frames_published(command.output)
    stream = decode_stream(capture.bytes_since(), keep_images=False)
    assert len(stream.video_pts) == sent, (len(stream.video_pts), sent)
    # On the frame grid, never backwards. A frame the node itself skipped while catching up after
    # the freeze (or one dropped for a slow reader under load) stays a gap of whole frames.
    steps = np.diff(stream.video_pts) * FPS
    assert np.allclose(steps, np.round(steps), atol=0.03) and steps.min() > 0.97, sorted(set(np.round(steps, 3)))
    missing = int(np.round(steps).sum()) - len(steps)
    print(f"{sent} frames published, {missing} slots left empty")
    assert missing < 1.6 * FPS, (missing, command.output)  # the freeze itself was bridged, not left a hole
