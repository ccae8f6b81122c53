"""Admission control: a session starts only if the node can serve it without hurting the others.

Two limits. Slots: at most `max_sessions` streams of any kind. Compute, for live
streams: each one costs fps x (engine + encoder CPU time per frame, measured from the
streams running, plus the event loop's share); live streams may plan on LOAD_TARGET
of the node's cores. Render streams run at low OS priority on what live ones leave, so
they take only a slot. An engine that knows its own real-time capacity (a GPU engine
measures it) caps its live streams at that. While any live stream is falling behind,
no new live stream starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import errors

#: Share of the cores that live streams may plan to use.
LOAD_TARGET = 0.85
#: CPU time per frame before anything has been measured (engine + encoder).
DEFAULT_FRAME_COST_MS = 8.0
#: The event loop's work per live frame (pacing, conversion, transport), measured on this design.
LOOP_COST_MS = 0.5


@dataclass(eq=False)
class Lease:
    engine: str
    live: bool
    fps: float
    released: bool = False


class Admission:
    def __init__(self, max_sessions: int, cores: int) -> None:
        self.max_sessions = max_sessions
        self.cores = cores
        self._leases: set[Lease] = set()
        self.refused = 0

    @property
    def active(self) -> int:
        return len(self._leases)

    def live_load(self, frame_cost_ms: dict[str, float]) -> float:
        """Planned share of the cores used by live streams, 0..1+."""
        per_core_ms = sum(
            lease.fps * (frame_cost_ms.get(lease.engine, DEFAULT_FRAME_COST_MS) + LOOP_COST_MS)
            for lease in self._leases
            if lease.live
        )
        return per_core_ms / 1000 / self.cores

    def live_capacity(self, engine: str, fps: float, frame_cost_ms: dict[str, float],
                      engine_capacity: int | None) -> int:
        """Live streams of `engine` at `fps` the node could hold in all, counting those running."""
        running = sum(1 for lease in self._leases if lease.live and lease.engine == engine)
        per_stream = fps * (frame_cost_ms.get(engine, DEFAULT_FRAME_COST_MS) + LOOP_COST_MS) / 1000 / self.cores
        room = max(0.0, LOAD_TARGET - self.live_load(frame_cost_ms))
        by_compute = running + math.floor(room / per_stream + 1e-9) if per_stream > 0 else self.max_sessions
        by_slots = running + max(0, self.max_sessions - self.active)
        capacity = min(by_compute, by_slots)
        if engine_capacity is not None:
            capacity = min(capacity, engine_capacity)
        return capacity

    def acquire(
        self, engine: str, live: bool, fps: float, frame_cost_ms: dict[str, float],
        engine_capacity: int | None, lagging: bool,
    ) -> Lease:
        """A slot for a new stream, or RESOURCE_EXHAUSTED saying why."""
        if self.active >= self.max_sessions:
            self.refused += 1
            raise errors.exhausted(
                "NODE_AT_CAPACITY",
                f"the node is at capacity ({self.max_sessions} sessions); retry on another node or later",
            )
        if live:
            running = sum(1 for lease in self._leases if lease.live and lease.engine == engine)
            if lagging or running >= self.live_capacity(engine, fps, frame_cost_ms, engine_capacity):
                self.refused += 1
                raise errors.exhausted(
                    "NODE_OVERLOADED",
                    "the node cannot take another live session without slowing the ones it serves; "
                    "retry on another node or later (render sessions may still fit)",
                )
        lease = Lease(engine, live, fps)
        self._leases.add(lease)
        return lease

    def release(self, lease: Lease) -> None:
        if not lease.released:
            lease.released = True
            self._leases.discard(lease)
