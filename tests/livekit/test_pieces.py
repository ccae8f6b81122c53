"""The worker's token and dispatch request, the command's one-line errors, the bot's voice follower."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from livekit import api, rtc

from avatar_livekit import AvatarJobRequest, AvatarLiveKitError, avatar_token
from avatar_livekit.bot import VoiceFollower
from avatar_livekit.frames import TurnFinished, VideoFormat
from avatar_livekit.session import AvatarSession

from .conftest import Speech


def test_the_avatar_token_is_an_agent_that_publishes_on_the_agents_behalf() -> None:
    token = avatar_token("key", "a-secret-long-enough-for-hmac-sha256!", room="demo", identity="avatar-1",
                         agent_identity="agent-1")
    claims = api.TokenVerifier("key", "a-secret-long-enough-for-hmac-sha256!").verify(token)
    assert claims.identity == "avatar-1" and claims.kind == "agent"
    assert claims.attributes == {"lk.publish_on_behalf": "agent-1"}
    video = claims.video
    assert video.room == "demo" and video.room_join and video.can_publish and video.can_publish_data
    assert video.can_publish_sources == ["camera", "microphone"]
    assert not (video.room_admin or video.room_create or video.room_list or video.room_record or video.can_update_own_metadata)


def test_a_dispatch_request_survives_the_metadata_round_trip_and_bad_metadata_is_explained() -> None:
    request = AvatarJobRequest("agent-1", "avatar-1", image=b"\xff\xd8photo", width=640, height=360, token="t")
    assert AvatarJobRequest.from_json(request.to_json()) == request
    for bad in ("", "[]", '{"agent_identity": "a"}', '{"agent_identity": "a", "avatar_identity": "b", "image": "%%"}'):
        with pytest.raises(AvatarLiveKitError, match="dispatch"):
            AvatarJobRequest.from_json(bad)


def test_node_mode_without_credentials_says_which_variables_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    session = AvatarSession(mode="node", image=b"photo")
    with pytest.raises(AvatarLiveKitError, match="LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        session._credentials()


@pytest.mark.parametrize("argv, message", [
    (["worker", "--node", "127.0.0.1:1"], "set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET"),
    (["bot", "--room", "r", "--image", "/no/such.jpg", "--follow", "a"], "set LIVEKIT_URL"),
])
def test_the_command_fails_in_one_line_that_says_what_to_do(argv: list[str], message: str) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "avatar_livekit.cli", *argv], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


class RecordingRenderer:
    format = VideoFormat(320, 240, 25.0, 48000)

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    async def push_speech(self, pcm: bytes, sample_rate: int, channels: int, turn_id: str) -> None:
        self.calls.append(("speech", turn_id, len(pcm) // 2))

    async def end_turn(self, turn_id: str) -> None:
        self.calls.append(("end", turn_id, 0))

    def interrupt(self) -> None:
        self.calls.append(("interrupt", "", 0))

    async def items(self):  # pragma: no cover - not read here
        if False:
            yield TurnFinished("", 0, False)

    async def aclose(self) -> None:
        pass


async def test_the_bot_turns_a_voice_into_turns_at_its_pauses(short_speech: Speech) -> None:
    # Two utterances with a second of silence between them, as a participant's track delivers them.
    rate = 48000
    speech = np.interp(np.arange(int(short_speech.seconds * rate)) * short_speech.rate / rate,
                       np.arange(len(short_speech.samples)), short_speech.samples).astype(np.int16)
    audio = np.concatenate([np.zeros(rate // 2, np.int16), speech, np.zeros(rate, np.int16), speech,
                            np.zeros(rate, np.int16)])
    source = rtc.AudioSource(rate, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    stream = rtc.AudioStream(track, sample_rate=rate, num_channels=1)
    renderer = RecordingRenderer()
    follower = VoiceFollower(renderer)

    async def frames():
        async for event in stream:
            yield event.frame

    listening = asyncio.create_task(follower.follow(frames()))
    for start in range(0, len(audio), 480):
        part = audio[start : start + 480]
        await source.capture_frame(rtc.AudioFrame(part.tobytes(), rate, 1, len(part)))
    await source.wait_for_playout()
    await asyncio.sleep(0.1)
    listening.cancel()
    await asyncio.gather(listening, return_exceptions=True)
    await stream.aclose()
    await source.aclose()
    ends = [c for c in renderer.calls if c[0] == "end"]
    assert [c[1] for c in ends] == ["voice-1", "voice-2"]
    spoken = {turn: sum(n for kind, t, n in renderer.calls if kind == "speech" and t == turn) / rate
              for turn in ("voice-1", "voice-2")}
    gate = follower.gate
    for seconds in spoken.values():  # the onset's pre-roll, the utterance and the pause that ended it
        assert short_speech.seconds - 0.2 < seconds < short_speech.seconds + gate.preroll_s + gate.hang_s + 0.05
