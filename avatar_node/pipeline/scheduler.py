"""One scheduler per engine: runs steps off the event loop, live work ahead of render work.

A CPU engine (max_batch 1) steps each stream on the `live` or `background` pool, whose
OS priorities keep render streams from starving live ones. A batching engine (the GPU
engine) gets one engine thread; each round takes every waiting request, live ones
first, up to `max_batch`, into one `step_batch` call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from avatar_node.engines.base import Conditioning, Engine, EngineStream
from avatar_node.media.canvas import fit_into_canvas

from .threads import WorkPools

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StepResult:
    images: list[np.ndarray]  # fitted to the stream's canvas
    wall_s: float
    cpu_s: float  # CPU time of this stream's share of the work


@dataclass
class _Request:
    stream: EngineStream
    cond: Conditioning
    size: tuple[int, int]
    reset_speech: bool
    future: asyncio.Future[StepResult]


def _fit(frames: Sequence[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    width, height = size
    return [f if f.shape[:2] == (height, width) else fit_into_canvas(f, width, height)[0] for f in frames]


def _step_one(stream: EngineStream, cond: Conditioning, size: tuple[int, int], reset: bool) -> StepResult:
    start, cpu = time.perf_counter(), time.thread_time()
    if reset:
        stream.reset_speech()
    images = _fit(stream.step(cond), size)
    return StepResult(images, time.perf_counter() - start, time.thread_time() - cpu)


class StepScheduler:
    def __init__(self, engine: Engine, pools: WorkPools) -> None:
        self.engine = engine
        self.pools = pools
        self.batching = engine.info.max_batch > 1
        self._engine_thread: ThreadPoolExecutor | None = None
        self._live: deque[_Request] = deque()
        self._background: deque[_Request] = deque()
        self._waiting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.batching:
            self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.engine.info.name}-engine")
            self._task = asyncio.create_task(self._batch_loop())

    async def step(
        self, stream: EngineStream, cond: Conditioning, live: bool, size: tuple[int, int], reset_speech: bool
    ) -> StepResult:
        if not self.batching:
            return await self.pools.run(self.pools.for_stream(live), _step_one, stream, cond, size, reset_speech)
        future: asyncio.Future[StepResult] = asyncio.get_running_loop().create_future()
        (self._live if live else self._background).append(_Request(stream, cond, size, reset_speech, future))
        self._waiting.set()
        return await future

    async def run(self, fn: Callable[..., T], *args: Any, live: bool = False) -> T:
        """Other work on this engine's streams (open, close): on the engine thread when
        there is one, so it never runs beside a batch."""
        pool = self._engine_thread or self.pools.for_stream(live)
        return await self.pools.run(pool, fn, *args)

    async def _batch_loop(self) -> None:
        limit = self.engine.info.max_batch
        while True:
            if not self._live and not self._background:
                self._waiting.clear()
                await self._waiting.wait()
            batch: list[_Request] = []
            for queue in (self._live, self._background):
                while queue and len(batch) < limit:
                    request = queue.popleft()
                    if not request.future.done():
                        batch.append(request)
            if not batch:
                continue
            assert self._engine_thread is not None
            try:
                results = await self.pools.run(self._engine_thread, self._step_batch, batch)
            except Exception as exc:  # one bad batch must not stop the engine
                log.exception("engine %s: batched step failed", self.engine.info.name)
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            for r, result in zip(batch, results):
                if not r.future.done():
                    r.future.set_result(result)

    def _step_batch(self, batch: list[_Request]) -> list[StepResult]:
        start, cpu = time.perf_counter(), time.thread_time()
        for r in batch:
            if r.reset_speech:
                r.stream.reset_speech()
        frames = self.engine.step_batch([r.stream for r in batch], [r.cond for r in batch])
        fitted = [_fit(f, r.size) for f, r in zip(frames, batch)]
        wall, cpu_share = time.perf_counter() - start, (time.thread_time() - cpu) / len(batch)
        return [StepResult(images, wall, cpu_share) for images in fitted]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for queue in (self._live, self._background):
            while queue:
                request = queue.popleft()
                if not request.future.done():
                    request.future.cancel()
        if self._engine_thread is not None:
            self._engine_thread.shutdown(wait=True, cancel_futures=True)
