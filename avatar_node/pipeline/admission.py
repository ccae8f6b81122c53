"""Admission control: a session starts only if the node can serve it without hurting the others.

Two limits. Slots: at most `max_sessions` streams of any kind. Compute, for live
streams: each one costs fps x (engine + encoder CPU time per frame, measured per
megapixel from the streams running and scaled to its size, plus the event loop's
share); live streams may plan on LOAD_TARGET of the node's cores. Render streams run at
low OS priority on what live ones leave, so they take only a slot. An engine that knows
its own real-time capacity (a GPU engine measures it) caps its live streams at that. While
any live stream is falling behind, no new live stream starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import errors

#: Share of the cores that live streams may plan to use.
LOAD_TARGET = 0.85
#: CPU time per frame per megapixel of output (engine + encoder) before anything was measured
#: (the portrait engine costs about 8 ms for an 848x480 frame on one core).
DEFAULT_MS_PER_MEGAPIXEL = 20.0
#: Below this size a frame's cost stops shrinking (fixed costs per frame dominate).
MIN_MEGAPIXELS = 0.1
#: The event loop's work per live frame (pacing, conversion, transport).
LOOP_COST_MS = 0.5


@dataclass(frozen=True)
class Demand:
    """What a stream asks of the node."""

    engine: str
    live: bool
    fps: float
    megapixels: float  # output width x height / 1e6


@dataclass(eq=False)
class Lease:
    demand: Demand
    released: bool = False


def frame_cost_ms(demand: Demand, ms_per_megapixel: dict[str, float]) -> float:
    per_mp = ms_per_megapixel.get(demand.engine, DEFAULT_MS_PER_MEGAPIXEL)
    return per_mp * max(demand.megapixels, MIN_MEGAPIXELS) + LOOP_COST_MS


class Admission:
    def __init__(self, max_sessions: int, cores: int, load_target: float = LOAD_TARGET) -> None:
        self.max_sessions = max_sessions
        self.cores = cores
        self.load_target = load_target
        self._leases: set[Lease] = set()
        self.refused = 0

    @property
    def active(self) -> int:
        return len(self._leases)

    def _share(self, demand: Demand, costs: dict[str, float]) -> float:
        return demand.fps * frame_cost_ms(demand, costs) / 1000 / self.cores

    def live_load(self, costs: dict[str, float]) -> float:
        """Planned share of the cores used by live streams, 0..1+."""
        return sum(self._share(lease.demand, costs) for lease in self._leases if lease.demand.live)

    def live_capacity(self, demand: Demand, costs: dict[str, float], engine_capacity: int | None) -> int:
        """Live streams like `demand` the node could hold in all, counting those of its engine running."""
        running = sum(1 for lease in self._leases if lease.demand.live and lease.demand.engine == demand.engine)
        room = max(0.0, self.load_target - self.live_load(costs))
        by_compute = running + math.floor(room / self._share(demand, costs) + 1e-9)
        by_slots = running + max(0, self.max_sessions - self.active)
        capacity = min(by_compute, by_slots)
        if engine_capacity is not None:
            capacity = min(capacity, engine_capacity)
        return capacity

    def acquire(self, demand: Demand, costs: dict[str, float], engine_capacity: int | None, lagging: bool) -> Lease:
        """A slot for a new stream, or RESOURCE_EXHAUSTED saying why."""
        if self.active >= self.max_sessions:
            self.refused += 1
            raise errors.exhausted(
                "NODE_AT_CAPACITY",
                f"the node is at capacity ({self.max_sessions} sessions); retry on another node or later",
            )
        if demand.live:
            running = sum(1 for lease in self._leases if lease.demand.live and lease.demand.engine == demand.engine)
            if lagging or running >= self.live_capacity(demand, costs, engine_capacity):
                self.refused += 1
                raise errors.exhausted(
                    "NODE_OVERLOADED",
                    "the node cannot take another live session of this size and frame rate without slowing "
                    "the ones it serves; retry on another node, later, or smaller (render sessions may still fit)",
                )
        lease = Lease(demand)
        self._leases.add(lease)
        return lease

    def release(self, lease: Lease) -> None:
        if not lease.released:
            lease.released = True
            self._leases.discard(lease)
