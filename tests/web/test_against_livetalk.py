"""The web page against a 16 fps engine: the browser plays the avatar at the engine's rate and
hears what is typed."""

from __future__ import annotations

import time

import pytest

from tests.conftest import LIVETALK_FPS

from .conftest import H, W, grab_frames, open_page, wait_playing

pytestmark = pytest.mark.slow


def test_the_page_plays_a_16_fps_avatar_and_its_speech(browser, mouth, livetalk_node):  # type: ignore[no-untyped-def]
    page, _ = open_page(browser, livetalk_node.web_url + f"?size={W}x{H}&autostart=1")
    wait_playing(page)
    idle = grab_frames(page, mouth, 2.0)
    assert idle[-1].shown - idle[0].shown > 1.2, "the video does not advance"

    page.evaluate("document.getElementById('text').value = 'Hello! I am your avatar.'; "
                  "document.querySelector('#say button').click(); true")
    talk = grab_frames(page, mouth, 4.0)
    assert max(g.voice for g in talk) > 0.02, "the page's audio does not receive the speech"

    # Frames the browser decoded over 4 s of wall time (its own fps figure swings under load).
    count = "document.getElementById('avatar').getVideoPlaybackQuality().totalVideoFrames"
    first, started = page.evaluate(count), time.monotonic()
    time.sleep(4.0)
    fps = (page.evaluate(count) - first) / (time.monotonic() - started)
    print(f"the browser decodes {fps:.2f} fps")
    assert abs(fps - LIVETALK_FPS) <= 1.0
