"""Live timing: when each frame is due, when late frames are skipped, and when speech may start.

Frame k is due at t0 + k/fps, t0 being when frame 0 left. The schedule never slides:
a stream that falls behind repeats frames to get back on time (LAG_LIMIT_S bounds how
late any frame leaves), so a live avatar never answers seconds late.

When may a streamed turn start? A client sending at 1x (or faster) has, at any time t
after its first audio arrived at T0, sent at least t - T0 of speech. Frame j of the
turn needs speech up to the end of its step plus the engine's look-ahead by the time
it must be rendered, so starting the turn at a frame due at S >= T0 + step + look-ahead
+ margin never starves it, whatever the chunk size. What has already arrived beyond
that lets the turn start sooner (a client ahead of real time waits for nothing).
"""

from __future__ import annotations

import math

from .speech import SpeechTurn

#: No frame leaves later than this after its due time.
LAG_LIMIT_S = 0.25
#: A frame not rendered this long after its due time is shown as a repeat.
REPEAT_AFTER_S = 0.15
#: The renderer skips ahead when a step would finish this late.
SKIP_SLACK_S = 0.06
#: Allowance for the sender's jitter when a streamed turn starts.
START_MARGIN_S = 0.01
#: How late a frame may leave while waiting for a streamed turn's late audio, before it
#: is cut as an underrun (silence): a frame a little late is better than a gap in the voice.
LATE_AUDIO_GRACE_S = 0.08
#: Frames rendered ahead of the schedule (the jitter buffer), in seconds.
LEAD_S = 0.1


class LiveSchedule:
    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.t0: float | None = None

    @property
    def started(self) -> bool:
        return self.t0 is not None

    def start(self, now: float, index: int) -> None:
        """Frame `index` leaves now; the schedule is fixed from here on."""
        self.t0 = now - index * self.period

    def due(self, index: int, now: float, next_send: int) -> float:
        """When frame `index` is due; before the start, as if `next_send` left now."""
        if self.t0 is None:
            return now + (index - next_send) * self.period
        return self.t0 + index * self.period

    def first_due_at_or_after(self, when: float) -> int:
        assert self.t0 is not None
        return max(0, math.ceil((when - self.t0) / self.period - 1e-9))


def lead_frames(fps: float, frames_per_step: int) -> int:
    return max(frames_per_step, math.ceil(LEAD_S * fps))


def earliest_start(turn: SpeechTurn, now: float, clock_rate: int, step_s: float, lookahead_s: float,
                   render_s: float) -> float:
    """The earliest due time of a first frame for `turn` that will not run out of speech.

    -inf for a closed turn (all its audio is here); +inf while not even the first step's
    audio has arrived.
    """
    if turn.closed:
        return -math.inf
    arrived = turn.unplayed_samples / clock_rate
    need = step_s + lookahead_s
    if turn.first_arrival is None or arrived < need:
        return math.inf
    margin = render_s + START_MARGIN_S
    by_rate = turn.first_arrival + need + margin  # a 1x sender keeps up from here
    by_stock = now + need + turn.largest_chunk_s + margin - arrived  # what is here covers the wait
    return min(by_rate, by_stock)
