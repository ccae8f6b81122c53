"""The web page against a 16 fps engine: the browser plays the avatar at the engine's rate and
hears what is typed."""

from __future__ import annotations

import re

import pytest

from tests.conftest import LIVETALK_FPS

from .conftest import H, W, grab_frames, open_page, wait_for, wait_playing

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

    def received_fps() -> float | None:
        text = page.evaluate("document.getElementById('stats').textContent") or ""
        found = re.match(r"([\d.]+) fps", text)
        return float(found.group(1)) if found and float(found.group(1)) > 0 else None

    fps = wait_for(received_fps, 10, "the page's frame rate")
    print(f"the browser receives {fps} fps")
    assert abs(fps - LIVETALK_FPS) <= 1.5
