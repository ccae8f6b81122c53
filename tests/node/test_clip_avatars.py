"""Clip avatars over real gRPC: a video is prepared and spoken through like a photo, lip-sync is
measured from decoded pixels, and bad clips are refused while the node keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from avatar_client.errors import AvatarError
from avatar_proto import avatar_pb2 as pb

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box
from avatar_node.speech.tts import SpeechSynthesizer

from ..portrait.clip_media import SyntheticClip, bad_clip, synthetic_clip
from .conftest import Call, channel, start_event
from .test_lipsync import H, W, _frames_and_envelope, _lag_of_best_fit, _render_speech_audio


@pytest.fixture(scope="module")
def synthetic() -> SyntheticClip:
    return synthetic_clip()


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    """A voice and text the synthetic clip never says."""
    with SpeechSynthesizer() as synth:
        clip = synth.synthesize(
            "Bright copper kettles boil while the quiet garden waits. Maybe tomorrow, the weather "
            "will open a window, and purple shadows will fall across the hills.",
            voice="en-gb+m3",
        )
    return np.asarray(clip.samples), clip.sample_rate


@pytest.mark.slow
async def test_a_clip_avatar_speaks_in_sync_over_grpc(node, synthetic, speech):
    async with channel(node.target) as stub:
        prepared = await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=synthetic.data))
    assert prepared.faces_found == 1 and (prepared.image_width, prepared.image_height) == (640, 360)
    assert any("30-120 s" in note for note in prepared.notes), prepared.notes  # a short clip: advice
    samples, rate = speech
    call = await _render_speech_audio(node.target, synthetic.data, samples, rate)
    advice = [n for n in call.of("notice") if n.code == pb.NOTICE_CODE_AVATAR_ADVICE]
    assert len(advice) == 1 and "30-120 s" in advice[0].message  # and the session says it once
    frames, envelope = _frames_and_envelope(call)
    box = mouth_box(PortraitEngine().prepare(synthetic.data), StreamOptions(W, H, 25.0))
    aperture = np.array([mouth_aperture(f, box) for f in frames])
    lag, score = _lag_of_best_fit(aperture, envelope)
    print(f"clip avatar over gRPC: best lag {lag:+.2f} frames, envelope correlation {score:.2f}")
    assert abs(lag) <= 1.0, f"the mouth is {lag:+.2f} frames off the sound"
    assert score >= 0.6


@pytest.mark.slow
async def test_bad_clips_are_refused_and_the_node_keeps_serving(node, synthetic, photo):
    cases = [("no face", "NO_FACE"), ("two faces", "SEVERAL_FACES"), ("too short", "TOO_LITTLE_FACE"),
             ("too long", "CLIP_TOO_LONG"), ("unreadable", "BAD_CLIP")]
    async with channel(node.target) as stub:
        for case, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=bad_clip(case, synthetic)))
            error = AvatarError.from_rpc_error(info.value)
            assert (info.value.code(), error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), case
            print(f"{case}: {info.value.details()}")
        # Over the node's message limit: refused by gRPC itself, and the status names the cap.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=bad_clip("too large", synthetic)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(16 * 1024 * 1024) in (info.value.details() or ""), info.value.details()
        # The node still serves a photo session.
        call = Call(stub)
        call.send(**start_event(photo, live=False))
        call.send(text=pb.SpeakText(text="Still here."))
        call.send(end=pb.EndSession())
        call.close()
        call.open()
        await call.read_all(timeout=60)
    assert call.of("ready") and len(call.of("video")) > 10
