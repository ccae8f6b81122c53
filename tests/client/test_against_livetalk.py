"""The CLI and the SDK against a 16 fps engine, as a new user runs them: no --fps given."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_client import AvatarClient
from avatar_client.cli import main
from tests.client.test_against_node import PHOTO, probe, speech_seconds, write_wav
from tests.conftest import LIVETALK_FPS

from .conftest import voiced_speech

pytestmark = pytest.mark.slow
BLOCK_S = 0.75


def test_say_without_fps_renders_at_the_engines_rate(livetalk_node, tmp_path, capsys):
    out = tmp_path / "say.mp4"
    rc = main(["say", "Hello, I am your avatar.", "--target", livetalk_node.target, "-o", str(out),
               "--size", "320x240", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"at {LIVETALK_FPS} fps" in captured.out
    facts = probe(out)
    assert facts["fps"] == pytest.approx(LIVETALK_FPS) and facts["size"] == (320, 240)
    # The engine renders blocks of 0.75 s: the file ends with the block the speech ends in.
    spoken = speech_seconds(captured.out)
    assert spoken - 1e-3 <= facts["duration_s"] <= spoken + BLOCK_S + 1 / LIVETALK_FPS
    assert np.abs(facts["audio"]).max() > 3000


def test_speak_without_fps_lasts_as_long_as_the_speech(livetalk_node, tmp_path, capsys):
    wav, out = tmp_path / "speech.wav", tmp_path / "speak.mp4"
    write_wav(wav, voiced_speech(1.5, 16_000), 16_000)
    rc = main(["speak", str(wav), "--target", livetalk_node.target, "-o", str(out), "--size", "160x120", "-q"])
    assert rc == 0, capsys.readouterr().err
    facts = probe(out)
    assert facts["fps"] == pytest.approx(LIVETALK_FPS)
    assert 1.5 <= len(facts["frames"]) / LIVETALK_FPS <= 1.5 + BLOCK_S


def test_sdk_session_without_fps_takes_the_engines_rate(livetalk_node):
    with AvatarClient(livetalk_node.target) as client:
        with client.start_session(PHOTO, width=160, height=120, mode="render") as session:
            assert session.ready.fps == LIVETALK_FPS
            session.say("Hi there.")
            session.end()
            frames = list(session.frames())
    ticks = session.ready.clock_rate // LIVETALK_FPS
    assert [f.video.pts for f in frames] == [k * ticks for k in range(len(frames))]
    assert all(f.audio.shape == (ticks,) for f in frames)
