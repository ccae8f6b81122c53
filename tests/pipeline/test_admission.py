"""Admission to the frame of capacity: the node takes exactly as many live streams as it
says it can hold, and refuses the next one."""

from __future__ import annotations

import pytest

from avatar_node.pipeline import PipelineError
from avatar_node.pipeline.admission import Admission, Demand

LIVE = Demand("card", live=True, fps=25.0, megapixels=1.0)
#: 9.5 ms per megapixel + 0.5 ms of loop: 10 ms a frame, a quarter of one core at 25 fps.
COSTS = {"card": 9.5}


def test_live_streams_fill_the_compute_capacity_and_the_next_is_refused():
    admission = Admission(max_sessions=10, cores=1, load_target=0.85)
    capacity = admission.live_capacity(LIVE, COSTS, None)
    assert capacity == 3  # 0.85 of a core / 0.25 each
    leases = [admission.acquire(LIVE, COSTS, None, lagging=False) for _ in range(capacity)]
    assert admission.live_capacity(LIVE, COSTS, None) == capacity
    with pytest.raises(PipelineError) as refused:
        admission.acquire(LIVE, COSTS, None, lagging=False)
    assert refused.value.reason == "NODE_OVERLOADED" and admission.refused == 1
    # Render streams take only a slot.
    admission.acquire(Demand("card", live=False, fps=25.0, megapixels=1.0), COSTS, None, lagging=False)
    admission.release(leases[0])
    admission.acquire(LIVE, COSTS, None, lagging=False)  # the freed room is taken again


def test_an_engine_capacity_caps_live_streams_exactly():
    admission = Admission(max_sessions=10, cores=64)
    admission.acquire(LIVE, COSTS, 2, lagging=False)
    admission.acquire(LIVE, COSTS, 2, lagging=False)
    with pytest.raises(PipelineError) as refused:
        admission.acquire(LIVE, COSTS, 2, lagging=False)
    assert refused.value.reason == "NODE_OVERLOADED"


def test_the_slot_limit_is_exact():
    admission = Admission(max_sessions=2, cores=64)
    for _ in range(2):
        admission.acquire(LIVE, COSTS, None, lagging=False)
    with pytest.raises(PipelineError) as refused:
        admission.acquire(LIVE, COSTS, None, lagging=False)
    assert refused.value.reason == "NODE_AT_CAPACITY"
