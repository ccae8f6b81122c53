"""The publisher at an interrupt: no picture from before `clear()` reaches the video track after it."""

from __future__ import annotations

import asyncio

import numpy as np
from avatar_livekit.frames import RenderedFrame, VideoFormat
from avatar_livekit.playout import Playout
from avatar_livekit.publisher import TrackPublisher
from livekit import rtc

FMT = VideoFormat(64, 48, 25.0, 48000)
SPEECH, IDLE = 200, 0  # the pictures' fill: which frame a handed-over picture came from


async def test_no_speech_picture_is_handed_over_after_clear() -> None:
    publisher = TrackPublisher(FMT)
    handed: list[tuple[int, int]] = []  # (clears so far, fill of the picture)
    capture = publisher.video_source.capture_frame
    clears = 0

    def spy(frame, *args, **kwargs):  # type: ignore[no-untyped-def]
        handed.append((clears, frame.data[0]))
        return capture(frame, *args, **kwargs)

    publisher.video_source.capture_frame = spy  # type: ignore[method-assign]
    tone = (np.sin(np.arange(1920) * 0.05) * 8000).astype(np.int16)

    def frame(fill: int) -> RenderedFrame:
        return RenderedFrame(np.full((48, 64, 3), fill, np.uint8), tone if fill == SPEECH else tone * 0,
                             speaking=fill == SPEECH)

    try:
        # Speech at 1x fills the audio queue: the next push waits for room, its picture
        # waits for its audio, exactly where an interrupt finds them.
        state = {"fill": SPEECH}
        pushing = asyncio.ensure_future(_push_forever(publisher, state, frame))
        await asyncio.sleep(0.5)
        assert any(fill == SPEECH for _, fill in handed)
        clears = 1
        publisher.clear()
        state["fill"] = IDLE  # what comes after an interrupt, as the playout sends it
        await asyncio.sleep(0.3)
        pushing.cancel()
        await asyncio.gather(pushing, return_exceptions=True)
    finally:
        await publisher.aclose()
    after = [fill for n, fill in handed if n == 1]
    assert after and after[-1] == IDLE
    assert SPEECH not in after, f"speech pictures handed over after the clear: {after}"


async def _push_forever(publisher: TrackPublisher, state: dict[str, int], frame) -> None:  # type: ignore[no-untyped-def]
    while True:
        await publisher.push(frame(state["fill"]))


class _Renderer:
    interrupted = 0

    def interrupt(self) -> None:
        self.interrupted += 1


async def test_an_interrupt_shows_the_face_at_rest_at_once() -> None:
    """The idle picture goes to the video track inside `clear()`, not with the renderer's next
    frame (up to a frame later, and on a node a round trip more)."""
    publisher = TrackPublisher(FMT)
    handed: list[int] = []
    capture = publisher.video_source.capture_frame

    def spy(frame, *args, **kwargs):  # type: ignore[no-untyped-def]
        handed.append(frame.data[0])
        return capture(frame, *args, **kwargs)

    publisher.video_source.capture_frame = spy  # type: ignore[method-assign]
    renderer = _Renderer()
    playout = Playout(renderer, publisher, on_started=lambda turn: None, on_finished=lambda *a: None)  # type: ignore[arg-type]
    try:
        silence = np.zeros(1920, np.int16)
        await playout._frame(RenderedFrame(np.full((48, 64, 3), IDLE, np.uint8), silence, speaking=False))
        playout._playing = "turn"  # as a TurnStarted sets it
        handed.clear()
        playout.clear()
        assert renderer.interrupted == 1
        assert handed == [IDLE]
    finally:
        await publisher.aclose()
