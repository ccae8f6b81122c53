"""A barge-in as a viewer of the published stream sees it: the portrait engine on a node,
interrupted mid-speech through the app, the MPEG-TS it sent over UDP decoded and measured."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from importlib import resources
from typing import Any

import av
import numpy as np
import pytest
from avatar_client import FeedTurn, SessionSpec
from avatar_obs.app import CLOCK_RATE, AppConfig, AvatarObs
from avatar_obs.publisher import StreamFrame, rtmp_destination, udp_destination

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box

from ..support.waits import until
from .conftest import decode_stream

PHOTO = resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()
W, H, FPS = 424, 240, 25


@pytest.mark.parametrize("via", ["udp", "rtmp"])
async def test_an_interrupt_shuts_the_streamed_mouth_within_two_frames_and_it_stays_shut(
    node: Any, udp_capture: Any, request: pytest.FixtureRequest, via: str
) -> None:
    """The first frame after the interrupt (located on the stream's timeline by the node's
    turn-finished pts) shows the mouth closing, the second shows it shut, and it never opens
    again in the silence after; the voice stops on the same frame."""
    if via == "udp":
        capture = udp_capture()
        destination = udp_destination("127.0.0.1", capture.port)
    else:
        nginx = request.getfixturevalue("nginx")  # records what it is sent
        destination = rtmp_destination(nginx.url("barge"))
    app = AvatarObs(AppConfig(
        spec=SessionSpec(photo=PHOTO, width=W, height=H, fps=FPS, engine="portrait"),
        destination=destination,
        target=node.target,
    ))
    box = mouth_box(PortraitEngine().prepare(PHOTO), StreamOptions(W, H, float(FPS)))
    turns: list[FeedTurn] = []
    on_turn = app._on_turn

    def record_turn(event: FeedTurn) -> None:
        on_turn(event)
        turns.append(event)

    app._on_turn = record_turn  # type: ignore[method-assign]  (read before the stream starts)
    running = asyncio.create_task(app.run())
    try:
        await until(lambda: app.publisher is not None and app.publisher.stats.frames_sent > 15, 20, "the stream")
        publisher = app.publisher
        assert publisher is not None
        # Watch the pictures as they go out, to interrupt while the mouth is opening wide.
        send, decoder, opening = publisher.send, av.CodecContext.create("h264", "r"), []
        last_sent = [0]

        def watch(frame: StreamFrame) -> None:
            send(frame)
            last_sent[0] = frame.index
            if frame.idle or not (opening or frame.keyframe):
                return
            for picture in decoder.decode(av.Packet(frame.encoded)):
                opening.append(mouth_aperture(picture.to_ndarray(format="rgb24"), box))

        publisher.send = watch  # type: ignore[method-assign]
        await app.say("Hello there! I am going to keep on talking about the weather for a long while, so that "
                      "you can interrupt me in the middle of it.")
        await until(lambda: len(opening) > 30 and opening[-1] > opening[-2] and opening[-1] - min(opening) > 4.0,
                    15, "the mouth opening wide")
        asked = last_sent[0] + 1  # the next frame to go out when the interrupt was asked
        await app.interrupt()
        with suppress(AssertionError):  # a lost interrupt is told by the pictures first
            await until(lambda: turns and turns[-1].kind == "finished", 5, "the turn to finish")
        sent = publisher.stats.frames_sent
        await until(lambda: publisher.stats.frames_sent > sent + 30, 10, "a second more of the stream")
        origin = publisher._origin  # the stream's first frame on the feed's timeline
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)

    assert origin is not None
    finished = next((t for t in turns if t.kind == "finished" and t.interrupted), None)
    if via == "udp":
        stream = decode_stream(capture.bytes_since())
    else:
        record = await until(lambda: sorted(nginx.records.glob("barge*.flv")), 5, "the recording")
        await asyncio.sleep(0.5)  # nginx closes the recording when the publisher leaves
        stream = decode_stream(record[0].read_bytes(), fmt="flv")
    frames = np.round((np.array(stream.video_pts) - stream.video_pts[0]) * FPS).astype(int)
    assert np.array_equal(frames, np.arange(len(frames))), "frames went missing on the way"
    # The first frame after the interrupt: where the node says the speech stopped.
    cut = round(finished.pts * FPS / CLOCK_RATE) - origin if finished else asked - origin
    aperture = np.array([mouth_aperture(image, box) for image in stream.images])
    rest = float(np.median(aperture[cut + 10 :]))  # the face at rest, well after the interrupt
    spoken, after = aperture[cut - 30 : cut] - rest, aperture[cut : cut + 25] - rest  # the node's, both
    print(f"OBS over {via}: cut {cut - asked + origin} frame(s) after the interrupt was asked; "
          f"mouth beyond rest at the interrupt {spoken[-1]:.1f}; after: "
          + ", ".join(f"{a:.1f}" for a in after[:8]))
    assert len(after) == 25 and spoken.max() > 3.0
    assert after[0] <= max(spoken[-1], 1.0), "the first frame after the interrupt opens the mouth wider"
    assert after[1] < 1.0, "the mouth is not shut two frames after the interrupt"
    assert after[1:].max() < 1.0, "the mouth opened again in silence"
    assert finished is not None, "the turn was not interrupted"
    assert cut + origin - asked <= 3, "the speech went on for frames after the interrupt"
    # The voice stops on that frame too (the stream's audio starts with the first frame).
    hop = stream.audio_rate // FPS
    start = round((stream.video_pts[0] - stream.audio_start) * stream.audio_rate)
    voice = stream.audio[start:]
    level = [float(np.sqrt(np.mean(voice[k * hop : (k + 1) * hop] ** 2))) for k in range(cut + 25)]
    assert max(level[cut - 5 : cut]) > 0.02 and max(level[cut:]) < 0.005, (level[cut - 5 : cut], level[cut:])
