"""Anything that yields H.264 access units with their audio can feed the stream, not only a node over
gRPC: here a session made in the test (its own encoder, a colour per second) drives the command."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import numpy as np

from avatar_client import SessionSpec
from avatar_client.feed_items import FeedFormat, FeedFrame
from avatar_node.media.encoder import H264Encoder
from avatar_obs.app import AppConfig, AvatarObs
from avatar_obs.publisher import udp_destination

from .conftest import decode_stream

WIDTH, HEIGHT, FPS, RATE = 160, 120, 25.0, 48_000
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


class ColourSource:
    """A session paced at 1x like a live pipeline; a flat colour that changes every second; a tone as audio."""

    description = "colours"

    def __init__(self) -> None:
        self.format = FeedFormat(WIDTH, HEIGHT, FPS, RATE)
        self.said: list[str] = []
        self.interrupted = 0
        self.closed = False

    async def items(self) -> AsyncIterator[FeedFrame]:
        encoder = H264Encoder(WIDTH, HEIGHT, FPS, keyframe_interval=25)
        start = time.monotonic()
        tone = (np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE) * 8000).astype(np.int16)
        for index in range(len(COLOURS) * 25):
            await asyncio.sleep(max(0.0, start + index / FPS - time.monotonic()))
            picture = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            picture[:] = COLOURS[index // 25]
            encoded = encoder.encode(picture)
            audio = tone[self.format.pts(index % 25) : self.format.pts(index % 25 + 1)]
            yield FeedFrame(index, self.format.pts(index), None, encoded.data, encoded.keyframe, audio, speaking=False)
        encoder.close()

    async def say(self, text: str, voice: str, turn_id: str) -> None:
        self.said.append(text)

    async def send_audio(
        self, pcm: np.ndarray | bytes, sample_rate: int, end_of_turn: bool, turn_id: str, channels: int
    ) -> None:
        pass

    async def end_turn(self, turn_id: str) -> None:
        pass

    async def listen(self, pcm: np.ndarray | bytes, sample_rate: int, channels: int) -> None:
        pass

    async def interrupt(self) -> None:
        self.interrupted += 1

    async def behaviour(self, name: str) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True


async def test_a_source_other_than_the_node_feeds_the_stream(udp_capture):
    capture = udp_capture()
    sources: list[ColourSource] = []

    async def open_source() -> ColourSource:
        sources.append(ColourSource())
        return sources[-1]

    app = AvatarObs(
        AppConfig(
            spec=SessionSpec(avatar_id="colours", width=WIDTH, height=HEIGHT, fps=FPS, video="h264"),
            destination=udp_destination("127.0.0.1", capture.port),
            open_source=open_source,
        )
    )
    task = asyncio.create_task(app.run())
    try:
        deadline = time.monotonic() + 10
        while not (app.timeline and app.timeline.stats.connected) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await app.say("hello")
        await app.interrupt()
        await asyncio.sleep(3.5)  # the source's three seconds, then still frames while it is reopened
    finally:
        app.stop()
        await task
    assert sources[0].said == ["hello"] and sources[0].interrupted == 1 and sources[0].closed
    stream = decode_stream(capture.bytes_since())
    assert np.allclose(np.diff(stream.video_pts), 1 / FPS, atol=1e-3)
    seen = [tuple(int(c) for c in image[HEIGHT // 2, WIDTH // 2]) for image in stream.images]
    for colour in COLOURS:  # every second of the source arrived, in order
        assert sum(np.abs(np.subtract(s, colour)).max() < 30 for s in seen) >= 20, colour
    firsts = [next(i for i, s in enumerate(seen) if np.abs(np.subtract(s, c)).max() < 30) for c in COLOURS]
    assert firsts == sorted(firsts)
