"""Runtime-wide frame totals that only grow: each closing stream's counters are folded in.

A stream's counters live as long as the stream; metrics must not go back when one
ends. `AvatarRuntime` folds a stream's counters into its `FrameTotals` at the moment the
stream leaves `runtime.streams` (on the event loop), so `totals + open streams` is
monotonic for a reader on that loop (see `FrameTotals.with_open`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Bucket upper bounds for CPU per frame (ms) and for live lag (s).
FRAME_CPU_BUCKETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
LAG_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


@dataclass
class Histogram:
    """Counts per bucket (the last one is +Inf) and the sum of what was observed."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times

    def add(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total += other.total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (+inf, count)."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append((bound, running))
        return out


def frame_cpu_histogram() -> Histogram:
    return Histogram(FRAME_CPU_BUCKETS_MS)


def lag_histogram() -> Histogram:
    return Histogram(LAG_BUCKETS_S)


@dataclass
class FrameFigures:
    """What a stream records about its frames, in the form totals are kept in."""

    frames_sent: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    frames_late: int = 0
    engine_cpu_ms: Histogram = field(default_factory=frame_cpu_histogram)
    encode_cpu_ms: Histogram = field(default_factory=frame_cpu_histogram)
    lag_s: Histogram = field(default_factory=lag_histogram)

    def add(self, other: FrameFigures) -> None:
        self.frames_sent += other.frames_sent
        self.frames_dropped += other.frames_dropped
        self.frames_skipped += other.frames_skipped
        self.frames_late += other.frames_late
        self.engine_cpu_ms.add(other.engine_cpu_ms)
        self.encode_cpu_ms.add(other.encode_cpu_ms)
        self.lag_s.add(other.lag_s)


class FrameTotals(FrameFigures):
    """The figures of every stream that has closed."""

    def with_open(self, open_streams: Iterable[FrameFigures]) -> FrameFigures:
        """A copy with the open streams' figures added: the node's totals so far."""
        out = FrameFigures()
        out.add(self)
        for figures in open_streams:
            out.add(figures)
        return out
