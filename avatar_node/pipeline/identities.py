"""Prepared avatars, cached by content and engine, bounded in count and in bytes.

A photo being prepared is prepared once, by a task of its own: every caller waiting
for it gets the result or the error, and a caller that gives up (cancels) takes
nothing from the others. Preparations wait their turn on one low-priority thread, and
only so many distinct photos may wait at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from avatar_node.engines.base import AvatarInputError, Engine, Identity

from . import errors

DEFAULT_MAX_ITEMS = 64
DEFAULT_MAX_BYTES = 1 << 30
#: Distinct photos that may be waiting for preparation at once.
MAX_PREPARING = 8


def estimate_bytes(value: Any, depth: int = 0) -> int:
    """Memory held by arrays and tensors inside an identity's data (a close lower bound)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    nbytes = getattr(value, "element_size", None)
    if callable(nbytes) and hasattr(value, "nelement"):  # a torch tensor
        return int(value.element_size() * value.nelement())
    if depth > 3:
        return 0
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(estimate_bytes(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return sum(estimate_bytes(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(estimate_bytes(v, depth + 1) for v in value)
    return 0


class IdentityCache:
    def __init__(self, max_items: int = DEFAULT_MAX_ITEMS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._items: OrderedDict[str, tuple[Identity, int]] = OrderedDict()
        self._bytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._preparing: dict[str, asyncio.Task[Identity]] = {}

    @staticmethod
    def key(image: bytes, engine: str) -> str:
        return f"{engine}-{hashlib.sha256(image).hexdigest()[:32]}"

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, avatar_id: str) -> Identity | None:
        entry = self._items.get(avatar_id)
        if entry is None:
            return None
        self._items.move_to_end(avatar_id)
        return entry[0]

    async def prepare(
        self, image: bytes, engine: Engine, run: Callable[..., Awaitable[Identity]]
    ) -> tuple[Identity, bool]:
        """The prepared identity for `image`, and whether it was already known."""
        key = self.key(image, engine.info.name)
        cached = self.get(key)
        if cached is not None:
            return cached, True
        task = self._preparing.get(key)
        if task is None:
            if len(self._preparing) >= MAX_PREPARING:
                raise errors.exhausted(
                    "PREPARE_BUSY", "the node is busy preparing other photos; retry in a few seconds"
                )
            task = asyncio.ensure_future(self._prepare(key, image, engine, run))
            self._preparing[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
            return await asyncio.shield(task), False
        return await asyncio.shield(task), True

    async def _prepare(
        self, key: str, image: bytes, engine: Engine, run: Callable[..., Awaitable[Identity]]
    ) -> Identity:
        try:
            identity = await run(engine.prepare, image)
        except AvatarInputError as exc:
            raise errors.from_input_error(exc) from None
        return dataclasses.replace(identity, avatar_id=key)

    def _finished(self, key: str, task: asyncio.Task[Identity]) -> None:
        self._preparing.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return  # every waiter has seen the error (or none was left)
        self._store(key, task.result())

    def _store(self, key: str, identity: Identity) -> None:
        size = estimate_bytes(identity.data)
        if key in self._items:
            return
        self._items[key] = (identity, size)
        self._bytes += size
        while self._items and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
            if len(self._items) == 1:
                break  # always keep the newest, even if it alone is over the budget
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    async def aclose(self) -> None:
        for task in list(self._preparing.values()):
            task.cancel()
        await asyncio.gather(*self._preparing.values(), return_exceptions=True)
