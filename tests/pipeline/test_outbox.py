"""The outbox never grows without bound, whatever the consumer does."""

from __future__ import annotations

import numpy as np

from avatar_node.pipeline.items import AVFrame, Notice, NoticeCode, Stats
from avatar_node.pipeline.outbox import MAX_WAITING_NOTICES, Outbox


def _stats(n: int) -> Stats:
    return Stats(n, 0, 0, 0, 0, 0.0, 0.0, 1.0, 0.0, 0.0, 0)


def _frame(k: int) -> AVFrame:
    return AVFrame(k, k * 1920, 1920, np.zeros(1920, np.int16), 48000, False, None, b"x")


async def test_notices_beyond_a_handful_are_summed_up():
    box = Outbox(media_limit=5)
    for i in range(10_000):
        box.put(Notice(NoticeCode.UNKNOWN_BEHAVIOUR, f"n{i}"))
    box.close()
    got = []
    try:
        while True:
            got.append(await box.get())
    except StopAsyncIteration:
        pass
    assert len(got) == MAX_WAITING_NOTICES + 1
    assert got[-1].code is NoticeCode.NOTICES_DROPPED and str(10_000 - MAX_WAITING_NOTICES) in got[-1].message


async def test_only_the_newest_stats_wait_and_frames_respect_the_limit():
    box = Outbox(media_limit=3)
    for i in range(100):
        box.put(_stats(i))
    for k in range(3):
        assert box.media_room()
        box.put(_frame(k))
    assert not box.media_room()
    items = [await box.get() for _ in range(4)]
    assert [type(i).__name__ for i in items] == ["Stats", "AVFrame", "AVFrame", "AVFrame"]
    assert items[0].frames_sent == 99
    assert box.media_room(3)
