"""End to end with a browser: the example agent served with Pipecat's SmallWebRTC transport on
loopback, rendering on a node; headless Chromium connects, gets video and audio, and typed text
moves the avatar's mouth (the test card's level bar, read from what the <video> shows) and is
heard (the page's WebAudio level). Closing the tab ends the pipeline and its node session."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from avatar_client import AsyncAvatarClient

from avatar_node.engines.testcard import bar_level

from ..support.waits import free_port, wait_until
from ..web.conftest import Chromium, DevTools, chromium_binary, decode_png

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipecat_agent.py"
W, H = 320, 240

GRAB = """
(async () => {
  const video = document.getElementById('avatar');
  const canvas = document.createElement('canvas'); canvas.width = %(w)d; canvas.height = %(h)d;
  const out = [];
  const end = performance.now() + %(ms)d;
  while (performance.now() < end) {
    canvas.getContext('2d').drawImage(video, 0, 0, %(w)d, %(h)d);
    out.push({picture: canvas.toDataURL('image/png'), voice: avatarPage.voiceRms});
    await new Promise(r => setTimeout(r, 80));
  }
  return out;
})()
"""


def sessions(target: str) -> int:
    async def ask() -> int:
        async with AsyncAvatarClient(target) as client:
            return (await client.node_info()).active_sessions

    return asyncio.run(ask())


def grab(page: DevTools, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    raw = page.evaluate(GRAB % {"w": W, "h": H, "ms": int(seconds * 1000)}, timeout_s=seconds + 30)
    return (np.array([bar_level(decode_png(g["picture"])) for g in raw]), np.array([g["voice"] for g in raw]))


def test_a_browser_sees_and_hears_the_avatar_say_typed_text(node) -> None:  # type: ignore[no-untyped-def]
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    port = free_port()
    agent = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port), "--node", node.target, "--engine", "testcard",
         "--width", str(W), "--height", str(H)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    browser = None
    try:
        import urllib.request

        def up() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
            except OSError:
                return False

        wait_until(up, 60, "the example agent to serve its page")
        browser = Chromium()
        page, tab = browser.open(f"http://127.0.0.1:{port}/")
        page.wait("typeof avatarPage !== 'undefined' && avatarPage.pc && avatarPage.pc.connectionState === "
                  "'connected' && document.getElementById('avatar').videoWidth > 0 && "
                  "document.getElementById('avatar').currentTime > 0.5", 60, "live video in the page")
        assert page.evaluate("document.getElementById('avatar').videoWidth") == W
        assert sessions(node.target) == 1
        idle_levels, idle_voice = grab(page, 1.0)
        page.evaluate("document.getElementById('text').value = 'Hello there, I am an avatar on Pipecat, "
                      "speaking in your browser.'; document.getElementById('say').requestSubmit(); true")
        levels, voice = grab(page, 4.0)
        print(f"idle: bar {idle_levels.max():.2f}, voice {idle_voice.max():.3f}; "
              f"speaking: bar up to {levels.max():.2f}, voice up to {voice.max():.3f}")
        assert idle_levels.max() <= 0.02 and idle_voice.max() < 0.01, "the avatar moved before it was asked"
        assert (levels > 0.05).sum() >= 5, "the mouth did not move in the browser"
        assert (voice > 0.01).sum() >= 5, "the voice was not heard in the browser"
        browser.close_tab(tab)
        page.close()
        wait_until(lambda: sessions(node.target) == 0, 30, "the node session to end with the tab")
    finally:
        if browser is not None:
            browser.stop()
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
