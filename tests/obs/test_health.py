"""The watchdog's judgement on sequences of pictures: dead feeds are repaired, live or still ones are not."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_obs.health import FeedWatchdog
from avatar_obs.pictures import SentPictures, thumbnail

INTERVAL = 2.0  # seconds on the scene's own clock: nothing here sleeps


def face(shift: int) -> np.ndarray:
    """A bright blob on grey that moves with `shift`: stands in for an avatar that moves."""
    image = np.full((36, 64, 3), 90, np.uint8)
    image[8 + shift % 5 : 24 + shift % 5, 20 + shift % 7 : 40 + shift % 7] = 220
    return image


class Scene:
    """What OBS shows and what was sent, step by step; counts repairs."""

    def __init__(self, shown, state: str = "OBS_MEDIA_STATE_PLAYING", sent=face) -> None:  # type: ignore[no-untyped-def]
        self.shown, self.state, self.sent = shown, state, sent
        self.step = 0
        self.now = 1000.0
        self.repairs = 0
        self.repaired_at: list[float] = []
        self.pictures = SentPictures(every_s=0)
        self.watchdog = FeedWatchdog(
            self.look,
            self.repair,
            self.pictures,
            interval_s=INTERVAL,
            window_s=3 * INTERVAL,
            grace_s=4 * INTERVAL,
            clock=lambda: self.now,
        )

    async def look(self) -> tuple[np.ndarray, str]:
        return self.shown(self.step), self.state

    async def repair(self) -> None:
        self.repairs += 1
        self.repaired_at.append(self.now)

    async def run(self, steps: int) -> list[str]:
        verdicts = []
        for _ in range(steps):
            self.step += 1
            self.now += INTERVAL
            self.pictures.add(thumbnail(self.sent(self.step)), at=self.now)
            verdicts.append(await self.watchdog.check())
        return verdicts


async def test_a_live_feed_is_left_alone():
    scene = Scene(shown=face)
    verdicts = await scene.run(15)
    assert scene.repairs == 0
    assert verdicts[-1] == "live"


async def test_a_frozen_picture_is_repaired_once_then_given_time():
    scene = Scene(shown=lambda step: face(3))  # OBS keeps showing one frame; we keep sending new ones
    verdicts = await scene.run(6)
    assert scene.repairs == 1, verdicts
    assert any("frozen picture" in v for v in verdicts)


async def test_nothing_shown_while_the_avatar_is_sent_is_repaired():
    scene = Scene(shown=lambda step: np.zeros((36, 64, 3), np.uint8))
    verdicts = await scene.run(6)
    assert scene.repairs == 1 and any("shows nothing" in v for v in verdicts), verdicts


async def test_a_still_avatar_is_not_mistaken_for_a_dead_feed():
    scene = Scene(shown=lambda step: face(3), sent=lambda step: face(3))
    await scene.run(15)
    assert scene.repairs == 0


async def test_a_paused_source_is_the_host_s_choice():
    scene = Scene(shown=lambda step: face(3), state="OBS_MEDIA_STATE_PAUSED")
    verdicts = await scene.run(12)
    assert scene.repairs == 0 and verdicts[-1] == "paused by the host"


@pytest.mark.parametrize("state", ["OBS_MEDIA_STATE_ENDED", "OBS_MEDIA_STATE_ERROR"])
async def test_an_ended_or_failed_source_is_repaired(state):
    scene = Scene(shown=face, state=state)
    await scene.run(6)
    assert scene.repairs == 1


async def test_repeated_failed_repairs_back_off():
    scene = Scene(shown=lambda step: face(3))
    await scene.run(60)  # two minutes of a feed that repairs do not bring back
    # Without back-off a repair would follow every window; with it they come 8, 16, 32 s apart.
    assert list(np.diff(scene.repaired_at)) == [8.0, 16.0, 32.0], scene.repaired_at
