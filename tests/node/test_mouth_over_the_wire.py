"""The mouth, measured from frames decoded off the real gRPC stream, follows the speech."""

from __future__ import annotations

import av
import numpy as np

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box
from avatar_proto import avatar_pb2 as pb

from .conftest import Call, channel, start_event

W, H = 640, 360


def _frames_and_audio(call: Call) -> tuple[list[np.ndarray], list[np.ndarray]]:
    codec = av.CodecContext.create("h264", "r")
    frames = []
    for v in call.of("video"):
        frames += [f.to_ndarray(format="rgb24") for f in codec.decode(av.Packet(v.data))]
    frames += [f.to_ndarray(format="rgb24") for f in codec.decode(None)]
    audio = [np.frombuffer(a.pcm, np.int16).astype(np.float32) / 32768 for a in call.of("audio")]
    return frames, audio


async def test_mouth_moves_with_speech_energy_and_rests_in_silence(node, photo):
    async with channel(node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, live=False, width=W, height=H))
        call.send(text=pb.SpeakText(text="Hello! My name is Ava, and I am talking to you."))
        silence = np.zeros(48000, np.int16)  # one second of silence as its own turn
        call.send(speech_audio=pb.SpeechAudio(pcm=silence.tobytes(), sample_rate=48000, end_of_turn=True))
        call.send(end=pb.EndSession())
        call.close()
        call.open()
        await call.read_all()
    frames, audio = _frames_and_audio(call)
    assert len(frames) == len(audio) > 60

    identity = PortraitEngine().prepare(photo)
    box = mouth_box(identity, StreamOptions(W, H, 25.0))
    aperture = np.array([mouth_aperture(f, box) for f in frames])
    energy = np.array([np.sqrt(np.mean(a**2)) for a in audio])

    speech = energy > 0.02
    silent_tail = aperture[-20:]  # the last 0.8 s are the silent turn
    # Correlate the aperture with the energy envelope smoothed over ~3 frames (the mouth is a
    # smoothed articulator, not a meter).
    envelope = np.convolve(energy, np.ones(3) / 3, mode="same")
    r = float(np.corrcoef(aperture, envelope)[0, 1])
    print(f"aperture/energy correlation r = {r:.2f}")
    assert r > 0.5, r
    # The aperture at rest is not zero on every face (lip seams, wrinkles): the mouth opens
    # well beyond it while speaking, and stays at it in silence.
    rest = float(np.median(silent_tail))
    assert aperture[speech].mean() - rest > 1.0
    assert silent_tail.std() < 0.5 and silent_tail.max() - rest < (aperture[speech].mean() - rest) / 2
