"""End to end: the SDK and the `avatar` CLI against a real node on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import wave

import av
import grpc
import numpy as np
import pytest

from avatar_client import (
    AsyncAvatarClient,
    AudioPacket,
    AvatarClient,
    AvatarError,
    Ended,
    TurnEvent,
    TurnKind,
    VideoPacket,
)
from avatar_client.cli import main
from ..support.media import sample_photo
from .conftest import voiced_speech

server = pytest.importorskip("avatar_node.server")
if not hasattr(pytest.importorskip("avatar_node.engines.portrait"), "PortraitEngine"):
    pytest.skip("the portrait engine is not in this tree yet", allow_module_level=True)

PHOTO = sample_photo()
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def node():
    node = server.start_background_node(
        server.NodeConfig(host="127.0.0.1", port=0, engines=["portrait"], max_sessions=4, auth_token=None)
    )
    yield node
    node.stop()


@pytest.fixture(scope="module")
def locked_node():
    node = server.start_background_node(
        server.NodeConfig(host="127.0.0.1", port=0, engines=["portrait"], max_sessions=2, auth_token=TOKEN)
    )
    yield node
    node.stop()


def write_wav(path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def probe(path) -> dict:
    """What a player sees in the file, decoded back with PyAV."""
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        facts = {
            "duration_s": container.duration / av.time_base,
            "codec": video.codec_context.name,
            "tag": video.codec_tag,
            "pix_fmt": video.codec_context.pix_fmt,
            "size": (video.codec_context.width, video.codec_context.height),
            "fps": float(video.average_rate),
            "audio_codec": audio.codec_context.name,
            "frames": [f.to_ndarray(format="rgb24") for f in container.decode(video=0)],
        }
    with av.open(str(path)) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    facts["audio"] = pcm * 32767
    facts["audio_rate"] = audio.codec_context.sample_rate
    return facts


def speech_seconds(stdout: str) -> float:
    match = re.search(r"for ([\d.]+) s of speech", stdout)
    assert match, stdout
    return float(match.group(1))


# ---------------------------------------------------------------- CLI


def test_speak_renders_the_audio_file_to_an_mp4_as_long_as_the_speech(node, tmp_path, capsys):
    speech = voiced_speech(1.5, 22_050, pitch_hz=140)
    wav, out = tmp_path / "speech.wav", tmp_path / "speak.mp4"
    write_wav(wav, speech, 22_050)
    rc = main(["speak", str(wav), "--target", node.target, "-o", str(out), "--size", "320x240", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert speech_seconds(capsys.readouterr().out) == pytest.approx(1.5)
    facts = probe(out)
    assert (facts["codec"], facts["tag"], facts["pix_fmt"]) == ("h264", "avc1", "yuv420p")
    assert facts["size"] == (320, 240) and facts["fps"] == pytest.approx(25)
    assert abs(facts["duration_s"] - 1.5) <= 2 / 25 + 1e-3  # see the next test for +-1 frame
    # The speech is in the file: loud, and at the speaker's pitch.
    pcm = facts["audio"]
    assert facts["audio_codec"] == "aac" and facts["audio_rate"] == 48_000
    assert np.abs(pcm).max() > 8000
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    assert np.fft.rfftfreq(len(pcm), 1 / 48_000)[spectrum.argmax()] == pytest.approx(140, abs=4)
    # The avatar moves while it speaks.
    frames = np.stack(facts["frames"]).astype(np.int16)
    assert np.abs(np.diff(frames, axis=0)).mean() > 0.05


def test_speak_file_lasts_as_long_as_the_speech_within_one_frame(node, tmp_path):
    wav, out = tmp_path / "speech.wav", tmp_path / "speak.mp4"
    write_wav(wav, voiced_speech(1.5, 16_000), 16_000)
    assert main(["speak", str(wav), "--target", node.target, "-o", str(out), "--size", "160x120", "-q"]) == 0
    facts = probe(out)
    assert abs(facts["duration_s"] - 1.5) <= 1 / 25 + 1e-3
    assert abs(len(facts["frames"]) / 25 - 1.5) <= 1 / 25 + 1e-6


def test_say_renders_text_at_the_asked_size_and_fps(node, tmp_path, capsys):
    out = tmp_path / "say.mp4"
    args = ["say", "Hello, I am your avatar.", "--target", node.target, "-o", str(out)]
    rc = main([*args, "--size", "256x192", "--fps", "20", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    spoken = speech_seconds(captured.out)
    assert spoken > 0.5
    facts = probe(out)
    assert facts["size"] == (256, 192) and facts["fps"] == pytest.approx(20)
    assert (facts["codec"], facts["tag"]) == ("h264", "avc1")
    assert abs(facts["duration_s"] - spoken) <= 1 / 20 + 1e-3
    assert np.abs(facts["audio"]).max() > 3000


def test_info_lists_the_engine(node, capsys):
    assert main(["info", "--target", node.target]) == 0
    text = capsys.readouterr().out
    # Another test's session may still be closing on the shared node.
    assert "portrait (default)" in text and re.search(r"sessions:  [01]/4 active", text)
    assert main(["info", "--target", node.target, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["max_sessions"] == 4 and info["engines"][0]["name"] == "portrait"


def test_a_failed_call_exits_non_zero_with_the_nodes_message(node, tmp_path):
    not_a_photo = tmp_path / "photo.jpg"
    not_a_photo.write_bytes(b"definitely not a JPEG" * 20)
    with AvatarClient(node.target) as client, pytest.raises(AvatarError) as refused:
        client.prepare_avatar(not_a_photo)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # The installed entry point, as a user runs it.
    result = subprocess.run(
        [sys.executable, "-m", "avatar_client.cli", "say", "hi", "--target", node.target,
         "--image", str(not_a_photo), "-o", str(tmp_path / "x.mp4"), "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    # The node's message quotes an object address that differs per call; compare the rest.
    stable = refused.value.message.split(" (")[0]
    assert result.stderr.startswith(f"error: {stable}") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists() or (tmp_path / "x.mp4").stat().st_size == 0


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["say", "hi", "--size", "big"])
    assert exited.value.code == 2
    assert "848x480" in capsys.readouterr().err


def test_token_is_required_and_sent(locked_node, tmp_path, capsys, monkeypatch):
    assert main(["info", "--target", locked_node.target]) == 1
    assert "token" in capsys.readouterr().err
    monkeypatch.setenv("AVATAR_TOKEN", TOKEN)  # read when the parser is built
    assert main(["info", "--target", locked_node.target]) == 0
    assert "auth:      token required" in capsys.readouterr().out


# ---------------------------------------------------------------- async SDK


async def test_async_session_events_share_one_clock(node):
    async with AsyncAvatarClient(node.target) as client:
        session = await client.start_session(PHOTO, width=320, height=240, fps=25, mode="render")
        ready = session.ready
        assert (ready.width, ready.height, ready.fps, ready.clock_rate) == (320, 240, 25, 48_000)
        speech = voiced_speech(1.0, 44_100).astype(np.float32) / 32768  # float input, resampled by the node
        await session.send_audio(speech, 44_100, end_of_turn=True, turn_id="greeting")
        await session.end()
        events = [event async for event in session.events()]
    video = [e for e in events if isinstance(e, VideoPacket)]
    audio = [e for e in events if isinstance(e, AudioPacket)]
    turns = [e for e in events if isinstance(e, TurnEvent)]
    assert isinstance(events[-1], Ended) and events[-1].reason == "end_requested"
    assert abs(len(video) - 25) <= 1 and video[0].keyframe
    assert [v.pts for v in video] == [round(k * 48_000 / 25) for k in range(len(video))]
    assert sorted(a.pts for a in audio) == [v.pts for v in video]
    assert all(len(a.pcm) == 2 * 1920 for a in audio)
    # A streamed turn may start before its last chunk (QUEUED) arrives; it finishes last.
    assert sorted(t.kind.value for t in turns) == sorted(k.value for k in (TurnKind.QUEUED, TurnKind.STARTED, TurnKind.FINISHED))
    assert turns[-1].kind == TurnKind.FINISHED
    assert {t.turn_id for t in turns} == {"greeting"}
    assert not turns[-1].interrupted and abs(turns[-1].played_ms - 1000) <= 40
    assert sum(v.speaking for v in video) >= 24


async def test_frames_decode_with_their_audio(node):
    async with AsyncAvatarClient(node.target) as client:
        prepared = await client.prepare_avatar(PHOTO)
        session = await client.start_session(avatar_id=prepared.avatar_id, width=320, height=240, mode="render")
        # 4 s at 192 kHz in one call: the SDK splits it into 100 ms messages.
        await session.send_audio(voiced_speech(4.0, 192_000), 192_000, end_of_turn=True)
        await session.end()
        frames = [frame async for frame in session.frames()]
    assert abs(len(frames) - 100) <= 1
    assert [f.video.index for f in frames] == list(range(len(frames)))
    assert all(f.video.image.shape == (240, 320, 3) for f in frames)
    assert all(f.audio.shape == (1920,) and f.sample_rate == 48_000 for f in frames)
    loud = np.abs(np.concatenate([f.audio for f in frames]).astype(np.int32)).max()
    assert loud > 8000
    assert session.ended is not None and session.last_stats is not None


async def test_interrupt_stops_a_live_turn_and_reports_what_played(node):
    async with AsyncAvatarClient(node.target) as client:
        session = await client.start_session(PHOTO, width=160, height=120, mode="live")
        await session.send_audio(voiced_speech(3.0, 16_000), 16_000, end_of_turn=True)
        finished = None
        speaking_frames = 0
        async for event in session.events():
            if isinstance(event, VideoPacket) and event.speaking:
                speaking_frames += 1
                if speaking_frames == 5:
                    await session.interrupt()
            elif isinstance(event, TurnEvent) and event.kind == TurnKind.FINISHED:
                finished = event
                await session.end(discard_pending=True)
    assert finished is not None and finished.interrupted
    assert 100 <= finished.played_ms < 1500


async def test_start_errors_raise_with_the_nodes_message(node, locked_node):
    async with AsyncAvatarClient(node.target) as client:
        with pytest.raises(AvatarError) as missing:
            await client.start_session(avatar_id="no-such-avatar")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND and "PrepareAvatar" in str(missing.value)
    async with AsyncAvatarClient(locked_node.target) as client:
        with pytest.raises(AvatarError) as locked:
            await client.node_info()
        assert locked.value.code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in str(locked.value)
    async with AsyncAvatarClient(locked_node.target, token=TOKEN) as client:
        assert (await client.node_info()).auth_required
        session = await client.start_session(PHOTO, width=160, height=120, mode="render")
        await session.aclose()


async def test_session_without_token_is_unauthenticated(locked_node):
    async with AsyncAvatarClient(locked_node.target) as client:
        for _ in range(3):
            with pytest.raises(AvatarError) as locked:
                await client.start_session(PHOTO)
            assert locked.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_ready_carries_the_codec_config(node):
    async with AsyncAvatarClient(node.target) as client:
        session = await client.start_session(PHOTO, width=160, height=120, mode="render")
        await session.aclose()
    assert session.ready.codec_config.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))


# ---------------------------------------------------------------- sync SDK


def test_sync_client_renders_frames(node):
    with AvatarClient(node.target) as client:
        assert client.node_info().default_engine == "portrait"
        with client.start_session(PHOTO, width=160, height=120, fps=10, mode="render") as session:
            session.say("Hi there.")
            session.end()
            frames = list(session.frames())
        assert session.ended is not None and session.ended.frames == len(frames)
        with pytest.raises(AvatarError, match="session has ended"):
            session.say("too late")
    assert len(frames) >= 3
    assert frames[0].video.image.shape == (120, 160, 3)
    assert all(f.audio.shape == (4800,) for f in frames)
