"""What a runtime reports about itself: engines, capacity, load, readiness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from avatar_node.engines.base import Engine, EngineInfo

from .admission import Admission, Demand

#: The output size capacity figures are given for (the default).
REFERENCE_MEGAPIXELS = 848 * 480 / 1e6


def _reference(engine: Engine) -> Demand:
    return Demand(engine.info.name, True, engine.info.native_fps, REFERENCE_MEGAPIXELS)


@dataclass(frozen=True)
class EngineStatus:
    info: EngineInfo
    is_default: bool
    live_capacity: int  # live 848x480 sessions at the engine's native fps the node could hold in all


@dataclass(frozen=True)
class RuntimeStatus:
    engines: list[EngineStatus]
    max_sessions: int
    active_sessions: int
    load: float  # planned share of the cores used by live sessions
    draining: bool
    ready: bool


def runtime_status(engines: Sequence[Engine], admission: Admission, costs: dict[str, float], draining: bool,
                   ready: bool) -> RuntimeStatus:
    return RuntimeStatus(
        engines=[
            EngineStatus(
                e.info, i == 0,
                admission.live_capacity(_reference(e), costs, e.realtime_capacity()),
            )
            for i, e in enumerate(engines)
        ],
        max_sessions=admission.max_sessions,
        active_sessions=admission.active,
        load=admission.live_load(costs),
        draining=draining,
        ready=ready,
    )


def can_take_live(engine: Engine, admission: Admission, costs: dict[str, float], running: int) -> bool:
    """Whether one more live session of `engine` at its native fps would be admitted."""
    if admission.active >= admission.max_sessions:
        return False
    capacity = admission.live_capacity(_reference(engine), costs, engine.realtime_capacity())
    return capacity > running
