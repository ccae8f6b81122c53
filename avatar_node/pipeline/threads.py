"""The node's threads, sized and prioritised on purpose.

- `live`: engine steps and encodes of live streams, one thread per core.
- `background`: the same for render streams, at a lower OS priority (nice 10), so a
  file being rendered as fast as possible never starves a live avatar.
- `prepare`: photo analysis (face detection can take a few hundred ms on a large
  photo), one thread at low priority, so uploads cannot crowd out frames.
- `ingest`: speech synthesis and conversion of large audio messages, one thread.

Numeric libraries run single-threaded inside these threads: streams run in parallel
across threads, and a BLAS pool per call only spins (an idle OpenBLAS worker
busy-waits after every small product, costing a core per session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

LOW_PRIORITY_NICE = 10


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (a container's CPU limit), or None."""
    base = Path(root)
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = (base / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((base / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a container's CPU limit."""
    if hasattr(os, "sched_getaffinity"):
        cores = max(1, len(os.sched_getaffinity(0)))
    else:
        cores = max(1, os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return cores if limit is None else max(1, min(cores, math.ceil(limit - 1e-6)))


#: The interpreter's thread switch interval the node runs with (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0005


def tune_interpreter() -> None:
    """Hand the interpreter lock over sooner. Frame work is many short numpy and OpenCV calls
    with a little Python between them; at the default 5 ms a busy event loop makes a render
    thread wait up to 5 ms at each of those steps (renders slow ten-fold), and the reverse."""
    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)


def limit_numeric_threads() -> None:
    """One thread inside BLAS and OpenCV calls, for the whole process."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception as exc:  # a missing or odd BLAS build is not worth failing for
        log.debug("could not limit BLAS threads: %s", exc)
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)


def _lower_priority(nice: int) -> None:
    if nice and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _pool(workers: int, name: str, nice: int = 0) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=_lower_priority, initargs=(nice,))


class WorkPools:
    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or usable_cores()
        self.live = _pool(self.cores, "live")
        self.background = _pool(self.cores, "background", LOW_PRIORITY_NICE)
        self.prepare = _pool(1, "prepare", LOW_PRIORITY_NICE)
        self.ingest = _pool(1, "ingest")
        self._sizes = {self.live: self.cores, self.background: self.cores, self.prepare: 1, self.ingest: 1}

    def start_threads(self) -> None:
        """Start every thread now: a thread started later, while others hold the interpreter
        busy, can keep the event loop waiting for its start for a long time."""
        for pool, workers in self._sizes.items():
            barrier = threading.Barrier(workers)
            for _ in range(workers):
                pool.submit(barrier.wait, 10)

    def for_stream(self, live: bool) -> ThreadPoolExecutor:
        return self.live if live else self.background

    @staticmethod
    async def run(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def shutdown(self) -> None:
        for pool in self._sizes:
            pool.shutdown(wait=False, cancel_futures=True)
