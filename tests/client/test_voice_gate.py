"""The one voice gate: turns open with their onset (the pre-roll, never less), close after the
hang, keep every sample in between, at any chunk size and sample rate; and every edge that lets
a microphone drive the avatar uses it, under one flag."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from avatar_client.voice_gate import THRESHOLD_FLAG, VoiceGate, level_dbfs


def utterance(rate: int) -> tuple[np.ndarray, int, int]:
    """1 s of silence, a 0.15 s onset rising from quiet, 1 s of voice, 1.5 s of silence (int16).
    Returns the samples and where the onset and the silence after the voice begin."""
    t = np.arange(int(1.15 * rate)) / rate
    voice = (0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float64)
    onset = int(0.15 * rate)
    voice[:onset] *= np.linspace(0.0, 1.0, onset) ** 3  # a word's start is quieter than its vowel
    quiet_before, quiet_after = np.zeros(rate), np.zeros(int(1.5 * rate))
    samples = np.concatenate([quiet_before, voice, quiet_after])
    return (samples * 32767).astype(np.int16), rate, rate + len(voice)


@pytest.mark.parametrize("rate", [16_000, 24_000, 48_000])
@pytest.mark.parametrize("chunk_ms", [10, 20, 100])
def test_a_turn_keeps_its_onset_and_every_sample_and_ends_after_the_hang(rate, chunk_ms):
    samples, rate, voice_end = utterance(rate)
    gate = VoiceGate(threshold_dbfs=-30.0, hang_s=0.6, preroll_s=0.3)
    chunk = rate * chunk_ms // 1000
    sent, opened_at, closed_at = [], None, None
    for start in range(0, len(samples), chunk):
        step = gate.feed(samples[start : start + chunk], rate)
        if step.opens:
            opened_at = start + chunk - sum(len(c) for c in step.chunks)  # where the sent audio begins
        sent += step.chunks
        if step.closes:
            closed_at = start + chunk
            break
    assert opened_at is not None and closed_at is not None
    out = np.concatenate(sent)
    np.testing.assert_array_equal(out, samples[opened_at:closed_at])  # contiguous: nothing lost
    # The onset starts at 1.0 s; the turn starts at least the pre-roll before the threshold crossing,
    # so before the onset's first audible sample.
    first_loud = next(s for s in range(0, len(samples), chunk) if level_dbfs(samples[s : s + chunk]) >= -30.0)
    assert opened_at <= first_loud - int(0.3 * rate)
    assert opened_at <= rate  # the whole onset is in the turn
    # It closes once 0.6 s of quiet has passed after the voice, within one chunk.
    quiet_from = (voice_end // chunk + 1) * chunk
    assert abs(closed_at - (quiet_from + int(0.6 * rate))) <= chunk


def test_reset_drops_the_turn_and_the_preroll():
    gate = VoiceGate(threshold_dbfs=-30.0)
    loud = (np.sin(np.arange(480) / 5) * 20000).astype(np.int16)
    quiet = np.zeros(480, np.int16)
    gate.feed(quiet, 48_000)
    assert gate.feed(loud, 48_000).opens and gate.open
    gate.reset()
    assert not gate.open
    step = gate.feed(loud, 48_000)
    assert step.opens and len(step.chunks) == 1  # no pre-roll left from before the reset


def test_floats_and_int16_have_the_same_level():
    x = np.sin(np.arange(4800) / 7) * 0.25
    assert level_dbfs(x.astype(np.float32)) == pytest.approx(level_dbfs((x * 32768).astype(np.int16)), abs=0.01)
    assert level_dbfs(np.zeros(10, np.int16)) == level_dbfs(np.zeros(0, np.int16)) == -120.0


def test_every_microphone_driven_edge_uses_the_one_gate():
    from avatar_client.virtualcam.drivers import PuppetDriver
    from avatar_node.web.microphone import MicrophoneRouter

    pytest.importorskip("aiortc")
    router = MicrophoneRouter(stream=None)  # type: ignore[arg-type]
    puppet = PuppetDriver(None, None, None, 48_000)  # type: ignore[arg-type]
    assert isinstance(router.gate, VoiceGate) and isinstance(puppet._gate, VoiceGate)
    obs_drivers = pytest.importorskip("avatar_obs.drivers")
    livekit_bot = pytest.importorskip("avatar_livekit.bot")
    assert obs_drivers.VoiceGate is VoiceGate and livekit_bot.VoiceGate is VoiceGate


@pytest.mark.parametrize("command", [
    ["avatar_client.cli", "cam", "--help"],
    ["avatar_client.cli", "obs", "--help"],
    ["avatar_livekit.cli", "bot", "--help"],
])
def test_one_flag_name_for_the_threshold(command):
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert THRESHOLD_FLAG in done.stdout
