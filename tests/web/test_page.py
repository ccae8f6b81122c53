"""Chromium loads the node's page, negotiates WHEP over loopback and shows the live avatar;
text typed in the page makes the mouth move and the page plays the speech."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import (
    H,
    W,
    apertures,
    browser_audio,
    grab_frames,
    likeness,
    node_sessions,
    open_page,
    start_node,
    wait_for,
    wait_playing,
)

SENTENCE = "Hello! I am your avatar, and I am talking to you from a web page."


def save_screenshot(png: bytes, tmp_path: Path) -> None:
    """A small palette PNG in the test's folder and, when asked, where the README shows it:
    AVATAR_WEB_SCREENSHOT=docs/web-page.png python -m pytest tests/web -k shows_the_live_avatar"""
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    (tmp_path / "web-page.png").write_bytes(out.getvalue())
    target = os.environ.get("AVATAR_WEB_SCREENSHOT")
    if target:
        Path(target).write_bytes(out.getvalue())


def test_the_page_shows_the_live_avatar_and_says_what_is_typed(browser, mouth, reference_small, tmp_path):
    with start_node() as node:
        page, _ = open_page(browser, node.web_url + f"?size={W}x{H}&autostart=1")
        # A phone's screen: the page must fit it without sideways scrolling.
        page.call("Emulation.setDeviceMetricsOverride", width=400, height=860, deviceScaleFactor=1, mobile=True)
        wait_playing(page)
        assert node_sessions(node) == (1, 1)

        idle = grab_frames(page, mouth, 2.5)
        assert len(idle) > 15
        assert idle[-1].shown - idle[0].shown > 1.5, "the video does not advance"
        alike = [likeness(g.small, reference_small) for g in idle]
        assert min(alike) > 0.8, f"the page does not show the avatar's face (likeness {min(alike):.2f})"
        moved = max(float(np.abs(g.small.astype(float) - idle[0].small).mean()) for g in idle)
        assert moved > 0.5, f"the picture does not change over time (mean change {moved:.2f})"

        # Type a sentence and press Say, as a person would.
        page.evaluate(f"document.getElementById('text').value = {SENTENCE!r}; "
                      "document.querySelector('#say button').click(); true")
        talk = grab_frames(page, mouth, 5.0)
        idle_open, talk_open = apertures(idle, mouth), apertures(talk, mouth)
        # Measured beyond the face at rest (lip seams and wrinkles are dark too).
        rest = float(np.median(idle_open))
        idle_open, talk_open = idle_open - rest, talk_open - rest
        print(f"mouth aperture beyond rest ({rest:.1f}): idle max {idle_open.max():.1f}, speaking max "
              f"{talk_open.max():.1f}, frames open > 1.5: {(talk_open > 1.5).sum()}")
        assert idle_open.max() < 1.0
        assert talk_open.max() > 3.0 and (talk_open > 1.5).sum() >= 5, "the mouth does not move with the speech"
        idle_voice, talk_voice = max(g.voice for g in idle), max(g.voice for g in talk)
        print(f"page audio RMS idle {idle_voice:.4f}, speaking {talk_voice:.4f}")
        assert idle_voice < 0.005 and talk_voice > 0.02, "the page's audio does not receive the speech"
        # Every 20 ms of audio arrives as its own packet: none discarded (a shared timestamp would
        # discard every second packet and conceal half the audio; some concealment is load).
        audio = browser_audio(page)
        assert audio["discarded"] == 0 and audio["concealed"] < 0.15 * audio["received"], audio

        stats = page.evaluate("document.getElementById('stats').textContent")
        assert "fps" in stats and "latency" in stats and "A/V" in stats and "dropped" in stats, stats
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 400
        save_screenshot(page.screenshot(), tmp_path)


def test_closing_the_tab_ends_the_session_on_the_node(browser):
    with start_node() as node:
        page, target = open_page(browser, node.web_url + f"?size={W}x{H}&autostart=1")
        wait_playing(page)
        assert node_sessions(node) == (1, 1)
        page.close()
        closed_at = time.monotonic()
        browser.close_tab(target)
        wait_for(lambda: node_sessions(node) == (0, 0), 5.0, "the node to end the session")
        print(f"session ended {time.monotonic() - closed_at:.2f} s after the tab closed")
