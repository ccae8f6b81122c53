"""The live pacer: delivers frame k at t0 + k/fps, never later than the lag limit.

The first frame leaves as soon as it is rendered and fixes the schedule. A frame
that is not rendered REPEAT_AFTER_S after its due time is delivered as a repeat of
the previous picture with its own audio, so the sound never gaps and no frame leaves
more than LAG_LIMIT_S late. Each frame is encoded just before it is due.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from .board import FrameBoard
from .delivery import Delivery
from .items import Notice, NoticeCode
from .schedule import REPEAT_AFTER_S, LiveSchedule
from .stats import RECENT_S, StreamCounters

#: A session is told it cannot keep up when this share of its recent frames were repeats.
FALLING_BEHIND_SHARE = 0.1
FALLING_BEHIND_NOTICE_EVERY_S = 30.0


class LivePacer:
    def __init__(
        self,
        board: FrameBoard,
        schedule: LiveSchedule,
        delivery: Delivery,
        counters: StreamCounters,
        on_falling_behind: Callable[[float], None],
    ) -> None:
        self.board = board
        self.schedule = schedule
        self.delivery = delivery
        self.counters = counters
        self._on_falling_behind = on_falling_behind
        self._told_behind_at = -1e9

    def _encode_lead(self) -> float:
        """How long before its due time a frame is taken for encoding."""
        return 0.002 + 2 * self.counters.encode_ms_recent / 1000

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        board, schedule = self.board, self.schedule
        while True:
            index = board.next_send
            frame = board.frames.get(index)
            now = loop.time()
            if frame is None:
                if board.renderer_done:
                    return
                await board.wait_changed()
                continue
            if not frame.ready:
                if not schedule.started or self.delivery.last_image is None:
                    await board.wait_changed()  # the first frame waits for its picture
                    continue
                too_late = schedule.due(index, now, index) + REPEAT_AFTER_S
                if now < too_late:
                    await board.wait_changed(too_late - now)
                    continue
                frame.skipped = True  # rendering fell behind: repeat the last picture
                self.counters.frames_skipped += 1
            if not schedule.started:
                schedule.start(now, index)
            due = schedule.due(index, now, index)
            start_at = due - self._encode_lead()
            if start_at > now:
                # Ready and early: only a barge-in (frames discarded) changes anything now.
                await board.wait_rewound(start_at - now)
                continue
            await self.delivery.deliver(board.take(index), functools.partial(_sleep_until, loop, due))
            now = loop.time()
            self.counters.record_delivery(max(0.0, now - due), schedule.period, frame.skipped, now)
            self._check_keeping_up(now)

    def _check_keeping_up(self, now: float) -> None:
        share = self.counters.skipped_share()
        if share < FALLING_BEHIND_SHARE:
            return
        self._on_falling_behind(now)
        if now - self._told_behind_at >= FALLING_BEHIND_NOTICE_EVERY_S:
            self._told_behind_at = now
            self.delivery.outbox.put(
                Notice(
                    NoticeCode.FALLING_BEHIND,
                    f"the node cannot render this session at real time: {share:.0%} of the last "
                    f"{RECENT_S:g} s were repeated frames (the sound is intact); "
                    "use a lower fps or size, or another node",
                )
            )


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
