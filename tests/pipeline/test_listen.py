"""The listen track keeps only the newest audio, within its backlog, whatever the client sends."""

from __future__ import annotations

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE
from avatar_node.pipeline.listen import LIVE_BACKLOG_S, RENDER_BACKLOG_S, ListenTrack

RATE = SPEECH_SAMPLE_RATE


def _second(marker: int, seconds: float = 1.0) -> np.ndarray:
    """int16 audio whose every sample says which piece it is."""
    return np.full(int(seconds * RATE), marker, np.int16)


def _marker(window: np.ndarray) -> float:
    return float(np.median(window) * 32768)


def test_a_flood_keeps_the_newest_backlog_and_bounded_memory():
    track = ListenTrack(live=False)
    dropped = [track.push(_second(100 + k), RATE) for k in range(120)]  # two minutes, never taken
    assert not any(dropped[: int(RENDER_BACKLOG_S)]) and all(dropped[int(RENDER_BACKLOG_S) + 1 :])
    assert track.nbytes <= 4 * RENDER_BACKLOG_S * RATE * 4, f"{track.nbytes} bytes kept for a 10 s backlog"
    # What is heard next is the oldest second still in the backlog, then each after it.
    oldest = 100 + 120 - int(RENDER_BACKLOG_S)
    assert [_marker(track.take(RATE, RATE)) for _ in range(3)] == [oldest, oldest + 1, oldest + 2]


def test_one_huge_message_is_cut_to_the_backlog_before_conversion():
    track = ListenTrack(live=True)
    assert track.push(np.full(600 * 48000, 7, np.int16), 48000)  # ten minutes at 48 kHz in one message
    assert track.nbytes <= 4 * LIVE_BACKLOG_S * RATE * 4
    assert track.dropped_samples >= 599 * RATE


def test_audio_taken_at_the_pace_it_comes_frees_its_memory():
    track = ListenTrack(live=True)
    piece = RATE // 5
    for k in range(3000):  # ten minutes, a fifth of a second at a time, heard as it arrives
        assert not track.push(_second(k + 1, 0.2), RATE)
        assert _marker(track.take(piece, piece)) == k + 1
    assert track.nbytes <= 4 * piece * 4
    assert _marker(track.take(RATE, RATE)) == 0  # nobody talking: silence
