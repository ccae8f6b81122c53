"""Prepared avatars: one preparation shared by every caller, bounded in count and bytes."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from avatar_node.engines.base import AvatarInputError, Engine, EngineInfo, Identity, StreamOptions
from avatar_node.pipeline import errors
from avatar_node.pipeline.errors import ErrorCode, PipelineError
from avatar_node.pipeline.identities import MAX_PREPARING, IdentityCache


class SlowEngine(Engine):
    info = EngineInfo("slow", 25, 1, 0)

    def __init__(self, seconds: float = 0.2, megabytes: int = 1) -> None:
        self.seconds = seconds
        self.megabytes = megabytes
        self.calls = 0
        self.release = threading.Event()

    def prepare(self, image: bytes) -> Identity:
        self.calls += 1
        self.release.wait(self.seconds)
        if image.startswith(b"bad"):
            raise AvatarInputError("no face here", "NO_FACE")
        return Identity("x", "slow", 1, 1, None, 1, np.zeros(self.megabytes << 20, np.uint8))

    def open(self, identity: Identity, options: StreamOptions):  # type: ignore[no-untyped-def]
        raise NotImplementedError


async def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_a_caller_that_gives_up_takes_nothing_from_the_others():
    cache, engine = IdentityCache(), SlowEngine(0.3)
    first = asyncio.create_task(cache.prepare(b"photo", engine, _in_thread))
    second = asyncio.create_task(cache.prepare(b"photo", engine, _in_thread))
    await asyncio.sleep(0.05)
    first.cancel()
    identity, cached = await asyncio.wait_for(second, 5)
    assert identity.avatar_id == IdentityCache.key(b"photo", "slow") and cached
    assert engine.calls == 1 and cache.get(identity.avatar_id) is identity


async def test_every_waiter_gets_the_error():
    cache, engine = IdentityCache(), SlowEngine(0.1)
    results = await asyncio.gather(*(cache.prepare(b"bad photo", engine, _in_thread) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, PipelineError) and r.reason == "NO_FACE" and r.code is ErrorCode.INVALID_ARGUMENT
               for r in results)
    assert engine.calls == 1 and len(cache) == 0


async def test_the_cache_is_bounded_in_bytes_and_count():
    cache, engine = IdentityCache(max_items=100, max_bytes=10 << 20), SlowEngine(0.0, megabytes=3)
    for i in range(20):
        await cache.prepare(f"photo {i}".encode(), engine, _in_thread)
    assert len(cache) == 3 and cache.size_bytes <= 10 << 20
    newest = IdentityCache.key(b"photo 19", "slow")
    assert cache.get(newest) is not None and cache.get(IdentityCache.key(b"photo 0", "slow")) is None


async def test_too_many_photos_waiting_are_refused_with_a_reason():
    cache, engine = IdentityCache(), SlowEngine(5.0)
    waiting = [asyncio.create_task(cache.prepare(f"p{i}".encode(), engine, _in_thread)) for i in range(MAX_PREPARING)]
    await asyncio.sleep(0.01)
    with pytest.raises(PipelineError) as refused:
        await cache.prepare(b"one more", engine, _in_thread)
    assert refused.value.reason == "PREPARE_BUSY" and refused.value.code is errors.ErrorCode.RESOURCE_EXHAUSTED
    engine.release.set()
    await asyncio.gather(*waiting)
