"""The default portrait engine under a Pipecat pipeline: the mouth, read from the pushed pixels,
opens with the pushed voice, and closes within two frames of an interruption."""

from __future__ import annotations

import numpy as np
import pytest
from avatar_pipecat import AvatarVideoService
from pipecat.frames.frames import InterruptionFrame

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait.engine import PortraitEngine
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box

from .harness import AvatarPipeline, PushedFrame, Speech, best_lag, envelope

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
W, H, FPS = 320, 240, 25.0


@pytest.fixture(scope="module")
def box(photo: bytes) -> tuple[int, int, int, int]:
    return mouth_box(PortraitEngine().prepare(photo), StreamOptions(W, H, FPS))


def apertures(box: tuple[int, int, int, int], frames: list[PushedFrame]) -> np.ndarray:
    return np.array([mouth_aperture(f.picture, box) if f.picture is not None else np.nan for f in frames])


def portrait(photo: bytes) -> AvatarVideoService:
    return AvatarVideoService(photo=photo, width=W, height=H, fps=FPS)  # no engine named: portrait


async def test_the_mouth_moves_with_the_pushed_voice(photo: bytes, box, long_speech: Speech) -> None:  # type: ignore[no-untyped-def]
    async with AvatarPipeline(portrait(photo)) as run:
        await run.until(lambda: len(run.frames()) >= 10)
        await run.say(long_speech)
        await run.until(lambda: run.finished_turns() >= 1)
        await run.end()
    frames = run.frames()
    opening, voice = apertures(box, frames), envelope(frames)
    speaking = np.array([f.speech for f in frames])
    assert opening[speaking].mean() - np.nanmedian(opening[~speaking]) > 0.5, "the mouth does not open to speak"
    lag, corr = best_lag(opening, voice)
    print(f"portrait, in-process: best lag {lag:+d} frames, envelope correlation {corr:.2f}")
    assert abs(lag) <= 1 and corr >= 0.6, (lag, corr)


async def test_an_open_mouth_closes_within_two_frames_of_an_interruption(
    photo: bytes, box, long_speech: Speech  # type: ignore[no-untyped-def]
) -> None:
    async with AvatarPipeline(portrait(photo)) as run:
        await run.until(lambda: len(run.frames()) >= 10)
        await run.say(long_speech)
        await run.until(lambda: run.speech_frames() >= 25)

        def wide_open() -> bool:  # interrupt with the mouth open, so that closing shows
            shown = [f.picture for f in run.frames() if f.picture is not None]
            return mouth_aperture(shown[-1], box) > 2.0

        await run.until(wide_open)
        await run.queue(InterruptionFrame())
        await run.until(lambda: any(isinstance(f, InterruptionFrame) for f in run.downstream()))
        cut = run.position_of(InterruptionFrame)
        await run.until(lambda: sum(f.position > cut for f in run.frames()) >= 10)
        await run.end()
    frames = run.frames()
    opening = apertures(box, frames)
    rest = float(np.nanmedian(opening[:10]))
    last_before = max(i for i, f in enumerate(frames) if f.position < cut and f.picture is not None)
    first_after = next(i for i, f in enumerate(frames) if f.position > cut and f.picture is not None)
    print("apertures around the interruption:", np.round(opening[last_before - 2 : first_after + 4], 2),
          f"at rest {rest:.2f}")
    assert not any(f.speech for f in frames[first_after:]), "speech after the interruption"
    assert opening[last_before] > rest + 0.8, "the test meant to interrupt an open mouth"
    assert opening[first_after] < opening[last_before], "the next picture does not show the mouth closing"
    assert np.all(opening[first_after + 1 : first_after + 8] <= rest + 0.5), "not closed within two frames"
