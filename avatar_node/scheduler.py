"""One scheduler per engine: runs step requests off the event loop, batching across sessions.

Requests wait in one FIFO, so sessions are served in turn. Each worker takes the
oldest request plus whatever else is already waiting (up to the engine's max_batch)
and runs one `step_batch` call in a thread. A CPU engine gets one worker per core; a
batching GPU engine gets one worker and large batches.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .engines.base import Conditioning, Engine, EngineStream

log = logging.getLogger(__name__)


@dataclass
class _Request:
    stream: EngineStream
    cond: Conditioning
    future: asyncio.Future[list[np.ndarray]]


class Scheduler:
    def __init__(self, engine: Engine, workers: int | None = None) -> None:
        self.engine = engine
        batching = engine.info.max_batch > 1
        self.workers = workers or (1 if batching else max(1, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"{engine.info.name}-step")
        self._queue: asyncio.Queue[_Request] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def step(self, stream: EngineStream, cond: Conditioning) -> list[np.ndarray]:
        assert self._queue is not None, "Scheduler.start() first"
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(stream, cond, future))
        return await future

    async def run(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run other engine work (prepare, open, close) on the engine's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.engine.info.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [r for r in batch if not r.future.cancelled()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(
                    self._pool,
                    self.engine.step_batch,
                    [r.stream for r in batch],
                    [r.cond for r in batch],
                )
            except Exception as exc:  # one bad step must not stop the scheduler
                log.exception("engine step failed")
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            for r, frames in zip(batch, results):
                if not r.future.done():
                    r.future.set_result(frames)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
