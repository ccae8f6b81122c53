"""The browser's microphone reaches the node on the same peer connection: Chromium plays a
speech file as its microphone; in listen mode the node receives it as listen audio, in
puppet mode it becomes the avatar's speech and drives the mouth."""

from __future__ import annotations

from typing import Iterator

import pytest

from .conftest import H, W, Chromium, apertures, grab_frames, open_page, speech_wav, start_node, wait_for, wait_playing


@pytest.fixture(scope="module")
def mic_browser(chromium_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    wav = speech_wav(tmp_path_factory.mktemp("mic") / "speech.wav",
                     "Hello avatar. Can you hear me? I am talking into the microphone.", pause_s=0.8)
    chrome = Chromium(["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"])
    try:
        yield chrome
    finally:
        chrome.stop()


def session_of(node):  # type: ignore[no-untyped-def]
    sessions = list(node.server.web.sessions.values())
    assert len(sessions) == 1
    return sessions[0]


def test_listen_mode_sends_the_microphone_to_the_node_as_listen_audio(mic_browser):
    with start_node() as node:
        page, _ = open_page(mic_browser, node.web_url + f"?size={W}x{H}&mic=listen&autostart=1")
        wait_playing(page)
        session = session_of(node)
        wait_for(lambda: session.mic.listen_ms > 2000, 15, "two seconds of listen audio on the node")
        assert session.mic.speech_ms == 0
        # Speech, not silence or noise: loud words and quiet pauses, as in the file.
        levels = []
        wait_for(lambda: levels.append(session.mic.level_dbfs) or (max(levels) > -35 and min(levels) < -60), 15,
                 "both words and pauses in the microphone's audio")
        print(f"listen audio received: {session.mic.listen_ms:.0f} ms, levels {min(levels):.0f}..{max(levels):.0f} dBFS")
        assert max(levels) < -3, "the microphone's audio is clipped (wrong sample conversion)"
        stats = page.evaluate("new Promise(r => setTimeout(() => r(avatarPage.lastStats), 1500))")
        assert stats["node"]["mic"]["mode"] == "listen" and stats["node"]["mic"]["listen_ms"] > 0


def test_puppet_mode_makes_the_microphone_the_avatars_voice_and_moves_the_mouth(mic_browser, mouth):
    with start_node() as node:
        page, _ = open_page(mic_browser, node.web_url + f"?size={W}x{H}&mic=puppet&autostart=1")
        wait_playing(page)
        session = session_of(node)
        wait_for(lambda: session.mic.speech_ms > 500, 15, "the microphone as the avatar's speech")
        grabs = grab_frames(page, mouth, 6.0)
        opening = apertures(grabs, mouth)
        voice = max(g.voice for g in grabs)
        print(f"puppet: {session.mic.speech_ms:.0f} ms of speech in {session.mic.turns} turn(s); mouth max "
              f"{opening.max():.1f}, open frames {(opening > 1.5).sum()}; avatar voice RMS {voice:.3f}")
        assert session.mic.listen_ms == 0
        assert session.mic.turns >= 1, "the pause in the speech did not close the turn"
        assert opening.max() > 3.0 and (opening > 1.5).sum() >= 5, "the voice does not drive the mouth"
        assert voice > 0.02, "the avatar does not speak with the microphone's voice"
        # Switching the microphone off from the page stops it reaching the node.
        page.evaluate("avatarPage.setMic('off')")
        wait_for(lambda: session.mic.mode == "off", 5, "the node to switch the microphone off")
