"""A stream's counters and timings, and the estimates the live schedule takes from them."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

from .items import Stats
from .totals import FrameFigures, Histogram, frame_cpu_histogram, lag_histogram

#: The window over which a session's share of repeated frames is judged, in seconds.
RECENT_S = 5.0


def _p50(values: deque[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass
class StreamCounters:
    frames_sent: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    frames_late: int = 0
    lag_s: float = 0.0
    max_lag_s: float = 0.0
    engine_cpu_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100))  # per frame
    encode_cpu_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100))  # per frame
    encode_ms_recent: float = 5.0  # a pessimistic recent encode time (decays from the slowest)
    step_wall_s: deque[float] = field(default_factory=lambda: deque(maxlen=50))  # per frame, render to images
    started: float = field(default_factory=time.monotonic)
    #: (wall time, skipped?) of the frames delivered in the last RECENT_S, to tell a session
    #: that cannot keep up; `recent_skipped` counts the skipped ones among them.
    recent: deque[tuple[float, bool]] = field(default_factory=deque)
    recent_skipped: int = 0
    #: Everything observed, for the node's metrics (the deques above keep only recent values).
    engine_cpu_hist: Histogram = field(default_factory=frame_cpu_histogram)
    encode_cpu_hist: Histogram = field(default_factory=frame_cpu_histogram)
    lag_hist: Histogram = field(default_factory=lag_histogram)

    def record_encode(self, cpu_s: float) -> None:
        ms = cpu_s * 1000
        self.encode_cpu_ms.append(ms)
        self.encode_cpu_hist.observe(ms)
        self.encode_ms_recent = max(ms, 0.95 * self.encode_ms_recent)

    def record_step(self, frames: int, wall_s: float, cpu_s: float) -> None:
        if frames:
            self.step_wall_s.append(wall_s / frames)
            self.engine_cpu_ms.append(cpu_s * 1000 / frames)
            self.engine_cpu_hist.observe(cpu_s * 1000 / frames, frames)

    def step_estimate(self, frames: int) -> float:
        """A pessimistic wall time for a step of `frames` frames (the 90th percentile)."""
        if not self.step_wall_s:
            return 0.02 * frames
        ordered = sorted(self.step_wall_s)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * frames

    def step_typical(self, frames: int) -> float:
        """The median wall time of a step of `frames` frames."""
        if not self.step_wall_s:
            return 0.01 * frames
        return statistics.median(self.step_wall_s) * frames

    def record_delivery(self, lag_s: float, frame_s: float, skipped: bool, now: float) -> None:
        self.lag_s = lag_s
        self.max_lag_s = max(self.max_lag_s, lag_s)
        self.lag_hist.observe(lag_s)
        if lag_s > frame_s:
            self.frames_late += 1
        self.recent.append((now, skipped))
        self.recent_skipped += skipped
        while self.recent and self.recent[0][0] < now - RECENT_S:
            self.recent_skipped -= self.recent.popleft()[1]

    def skipped_share(self) -> float:
        """Share of the frames of the last RECENT_S seconds that were repeats."""
        return self.recent_skipped / len(self.recent) if len(self.recent) >= 10 else 0.0

    def figures(self) -> FrameFigures:
        return FrameFigures(self.frames_sent, self.frames_dropped, self.frames_skipped, self.frames_late,
                            self.engine_cpu_hist, self.encode_cpu_hist, self.lag_hist)

    def snapshot(self, media_seconds: float, underruns: int, queued_ms: int) -> Stats:
        elapsed = max(1e-6, time.monotonic() - self.started)
        return Stats(
            frames_sent=self.frames_sent,
            frames_dropped=self.frames_dropped,
            frames_skipped=self.frames_skipped,
            frames_late=self.frames_late,
            speech_underruns=underruns,
            lag_ms=self.lag_s * 1000,
            max_lag_ms=self.max_lag_s * 1000,
            realtime_factor=media_seconds / elapsed,
            engine_ms_p50=_p50(self.engine_cpu_ms),
            encode_ms_p50=_p50(self.encode_cpu_ms),
            queued_speech_ms=queued_ms,
        )
