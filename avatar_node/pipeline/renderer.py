"""The renderer: cuts speech into steps, has the engine render them, and keeps live streams on time.

Live: frames are rendered a little ahead of their due time (the jitter buffer). A
streamed turn starts at the first frame it cannot starve (see schedule.py); if idle
frames were already rendered for that moment, they are discarded so the speech shows
at once. An open turn whose next audio is late is waited for until the frame must be
rendered, then the frame is an underrun. When rendering falls behind the schedule,
frames are skipped (their audio still plays, over a repeated picture) so the next one
rendered is on time.

Render: the timeline moves only with speech, each step waits for its audio and for
room in the outbox, and frames are delivered as soon as they are rendered.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from avatar_node.engines.base import EngineStream
from avatar_node.media.clock import MediaClock

from .board import CutFrame, FrameBoard
from .conditioning import ConditioningCutter
from .delivery import Delivery
from .outbox import Outbox
from .scheduler import StepResult, StepScheduler
from .schedule import LATE_AUDIO_GRACE_S, SKIP_SLACK_S, LiveSchedule, earliest_start
from .speech import SpeechQueue
from .stats import StreamCounters


class Renderer:
    def __init__(
        self,
        *,
        live: bool,
        clock: MediaClock,
        board: FrameBoard,
        speech: SpeechQueue,
        cutter: ConditioningCutter,
        scheduler: StepScheduler,
        counters: StreamCounters,
        schedule: LiveSchedule,
        delivery: Delivery,
        outbox: Outbox,
        size: tuple[int, int],
        lead: int,
        lookahead_s: float,
        step_frames: Callable[[], int],
    ) -> None:
        self.live = live
        self.clock = clock
        self.board = board
        self.speech = speech
        self.cutter = cutter
        self.scheduler = scheduler
        self.counters = counters
        self.schedule = schedule
        self.delivery = delivery
        self.outbox = outbox
        self.size = size
        self.lead = lead
        self.lookahead_s = lookahead_s
        self.step_frames = step_frames
        self.engine_stream: EngineStream | None = None
        # Set by the stream:
        self.behaviours: list[str] = []
        self.prompt = ""
        self.reset_pending = False
        self.finishing = False
        #: The step being rendered, so closing can wait for the thread to finish with it.
        self.inflight: asyncio.Future[StepResult] | None = None

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self) -> None:
        try:
            if self.live:
                await self._run_live()
            else:
                await self._run_render()
        finally:
            self.board.renderer_done = True
            self.board.changed()

    # ------------------------------------------------------------------ live

    async def _run_live(self) -> None:
        board = self.board
        skipped = False
        while not (self.finishing and self.speech.idle):
            now = self._loop_time()
            self._start_speech_now(now)
            first, count = board.next_cut, self.step_frames()
            if first - board.next_send >= self.lead and not skipped:
                await board.wait_for_renderer_wake(self._poll_timeout())
                continue
            estimate = self.counters.step_estimate(count)
            due = self.schedule.due(first, now, board.next_send)
            if self.schedule.started and now + estimate > due + SKIP_SLACK_S:
                if self._skip_to(self.schedule.first_due_at_or_after(now + estimate), now):
                    # Render the frame skipped to at once, even beyond the lead: waiting for the
                    # lead would find it late again by the same estimate, and only rendering can
                    # show that an estimate swollen by one slow step (a busy start) is stale.
                    # A truly slow engine measures slow again and keeps skipping.
                    skipped = True
                    await asyncio.sleep(0)  # however far behind, never hold the event loop
                    continue
            if skipped:  # the estimate starts again from what this step takes now
                self.counters.step_wall_s.clear()
            skipped = False
            current = self.speech.current
            if current is not None and not self.speech.has_audio_for(current, first, count):
                # An open turn's late audio is awaited until the frame is needed (a little late).
                wait = due + LATE_AUDIO_GRACE_S - estimate - now
                if wait > 0.001:
                    await board.wait_for_renderer_wake(wait)
                    continue
            await self._render(first, count, self._may_start(first, count, now))

    def _may_start(self, first: int, count: int, now: float) -> bool:
        pending = self.speech.pending
        if pending is None:
            return False
        return self.schedule.due(first, now, self.board.next_send) >= self._earliest_start(now, count)

    def _earliest_start(self, now: float, count: int) -> float:
        pending = self.speech.pending
        assert pending is not None
        step_s = count * self.clock.frame_seconds
        return earliest_start(pending, now, self.clock.clock_rate, step_s, self.lookahead_s,
                              self.counters.step_estimate(count))

    def _start_speech_now(self, now: float) -> None:
        """New speech replaces idle frames rendered ahead, so it shows at the first frame it can."""
        board = self.board
        ahead = board.next_cut > board.next_send or board.rendering_epoch == board.epoch
        if self.speech.pending is None or not ahead or board.speech_ahead():
            return
        start = self._earliest_start(now, self.step_frames())
        if start == float("inf"):
            return
        first_possible = board.next_send
        if self.schedule.started:
            # Only frames that can still be rendered in time are worth rendering again.
            ready_by = now + self.counters.step_estimate(self.step_frames())
            first_possible = max(first_possible, self.schedule.first_due_at_or_after(max(start, ready_by)))
        if first_possible < board.next_cut or board.rendering_epoch == board.epoch:
            board.rewind()

    def _poll_timeout(self) -> float | None:
        # While a turn waits to start, look again every half frame; otherwise sleep until woken.
        return self.clock.frame_seconds / 2 if self.speech.pending is not None else None

    def _skip_to(self, target: int, now: float) -> bool:
        """Cut frames up to `target` without rendering them: their audio plays over a repeat.

        Only frames whose speech is here are skipped (overdue frames always have it from a
        1x sender). Returns whether anything was skipped."""
        first = self.board.next_cut
        count = self.speech.frames_with_audio(first, target - first)
        if count <= 0:
            return False
        _, step = self.cutter.cut(first, count, self._may_start(first, count, now))
        self.counters.frames_skipped += count
        self.board.add([CutFrame(first + i, self.board.epoch, fs, skipped=True) for i, fs in enumerate(step.frames)])
        return True

    # ------------------------------------------------------------------ render

    async def _run_render(self) -> None:
        board = self.board
        while not (self.finishing and self.speech.idle):
            turn = self.speech.current or self.speech.pending
            first, count = board.next_cut, self.step_frames()
            if turn is None or not self.speech.has_audio_for(turn, first, count):
                await board.wait_for_renderer_wake()  # the timeline moves only with speech
                continue
            await self.outbox.wait_for_room(count)
            frames = await self._render(first, count, may_start=True)
            for frame in frames:
                if frame.index == board.next_send and frame.index in board.frames:
                    await self.delivery.deliver(board.take(frame.index))

    # ------------------------------------------------------------------ both

    async def _render(self, first: int, count: int, may_start: bool) -> list[CutFrame]:
        """Cut and render one step; returns its frames, or [] if they were discarded meanwhile."""
        assert self.engine_stream is not None
        behaviours, self.behaviours = self.behaviours, []
        cond, step = self.cutter.cut(first, count, may_start, behaviours, self.prompt)
        board = self.board
        epoch = board.epoch
        frames = [CutFrame(first + i, epoch, fs) for i, fs in enumerate(step.frames)]
        board.add(frames)
        reset, self.reset_pending = self.reset_pending, False
        board.rendering_epoch = epoch
        self.inflight = asyncio.ensure_future(
            self.scheduler.step(self.engine_stream, cond, self.live, self.size, reset)
        )
        try:
            result = await asyncio.shield(self.inflight)
        finally:
            board.rendering_epoch = None
        self.counters.record_step(len(result.images), result.wall_s, result.cpu_s)
        if epoch != board.epoch:
            return []  # discarded while rendering (barge-in, or new speech)
        for frame, image in zip(frames, result.images):
            frame.image = image
        board.changed()
        return frames
