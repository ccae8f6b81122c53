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


async def test_barge_in_shuts_the_mouth_within_two_frames_and_it_stays_shut(node, photo):
    """A live session interrupted mid-sentence, as a viewer of the decoded stream sees it: the
    first silent frame shows the mouth closing, the second shows it shut, and it never opens
    again in the silence after."""
    async with channel(node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, live=True, width=W, height=H))
        call.send(text=pb.SpeakText(text="Hello there! I am going to keep on talking about the weather for "
                                         "a long while, so that you can interrupt me in the middle of it."))
        call.open()
        identity = PortraitEngine().prepare(photo)
        box = mouth_box(identity, StreamOptions(W, H, 25.0))
        live = av.CodecContext.create("h264", "r")
        seen: list[float] = []

        def opening_wide(event: pb.ServerEvent) -> bool:
            """Watch the decoded stream; interrupt while the mouth is opening, well open."""
            if event.WhichOneof("event") != "video":
                return False
            for frame in live.decode(av.Packet(event.video.data)):
                seen.append(mouth_aperture(frame.to_ndarray(format="rgb24"), box))
            return (event.video.speaking and event.video.frame_index > 30 and len(seen) > 2
                    and seen[-1] > seen[-2] and seen[-1] - min(seen) > 5.0)

        await call.read_until(opening_wide, timeout=60)
        call.send(control=pb.Control(interrupt=pb.Interrupt()))
        await call.read_until(lambda e: e.WhichOneof("event") == "turn" and e.turn.kind == pb.TurnEvent.KIND_FINISHED)
        last = call.of("video")[-1].frame_index
        await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.frame_index > last + 25)
        call.send(end=pb.EndSession())
        call.close()
        await call.read_all()
    frames, _ = _frames_and_audio(call)
    videos = call.of("video")
    assert len(frames) == len(videos)
    aperture = np.array([mouth_aperture(f, box) for f in frames])
    cut = max(k for k, v in enumerate(videos) if v.speaking) + 1  # the first frame after the interrupt
    rest = float(np.median(aperture[cut + 10 :]))  # the face at rest, well after the interrupt
    spoken, after = aperture[:cut] - rest, aperture[cut : cut + 25] - rest
    print(f"speaking max {spoken.max():.1f}; at the interrupt {spoken[-1]:.1f}; after: "
          + ", ".join(f"{a:.1f}" for a in after[:5]))
    assert spoken.max() > 3.0
    assert after[0] <= max(spoken[-1], 1.0), "the first frame after the interrupt opens the mouth wider"
    assert after[1] < 1.0, "the mouth is not shut two frames after the interrupt"
    assert after[1:].max() < 1.0, "the mouth opened again in silence"
