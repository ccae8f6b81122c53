"""Barge-in on the web page, as the browser shows it: Interrupt mid-sentence silences the voice
and the mouth shuts and stays shut."""

from __future__ import annotations

import numpy as np

from .conftest import H, W, apertures, grab_frames, open_page, start_node, wait_for, wait_playing


def test_interrupt_shuts_the_mouth_in_the_page_and_it_stays_shut(browser, mouth):
    with start_node() as node:
        page, _ = open_page(browser, node.web_url + f"?size={W}x{H}&autostart=1")
        wait_playing(page)
        idle = grab_frames(page, mouth, 1.5)
        rest = float(np.median(apertures(idle, mouth)))
        page.evaluate("document.getElementById('text').value = 'I am going to talk for quite a while now, "
                      "about the weather and the sea and the hills, until somebody interrupts me.'; "
                      "document.querySelector('#say button').click(); true")
        wait_for(lambda: page.evaluate("avatarPage.voiceRms") > 0.02, 15, "the avatar to speak")
        talking = grab_frames(page, mouth, 1.5)
        page.evaluate("document.getElementById('interrupt').click(); true")
        after = grab_frames(page, mouth, 2.0, every_ms=40)
    talk_open = apertures(talking, mouth) - rest
    shown = np.array([g.shown for g in after])
    opening = apertures(after, mouth) - rest
    settled = opening[shown >= shown[0] + 0.3]  # past what was on its way to the screen
    print(f"speaking max {talk_open.max():.1f}; after the interrupt max {settled.max():.1f}, voice "
          f"{max(g.voice for g in after[-10:]):.4f}")
    assert talk_open.max() > 3.0, "the mouth did not open to speak"
    assert settled.max() < 1.0, "the mouth opened again in silence after the interrupt"
    assert max(g.voice for g in after[-10:]) < 0.005, "the voice goes on after the interrupt"
