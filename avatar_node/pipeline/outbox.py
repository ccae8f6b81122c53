"""The stream's bounded queue of items for its consumer.

Frames count against a limit (the caller decides what to do when it is full: a live
stream drops, a render stream waits). Other items always fit, but cannot pile up: at
most one Stats waits (a newer one replaces it), and notices beyond a handful are
dropped and summed up in one notice once the consumer catches up.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .errors import PipelineError
from .items import AVFrame, Notice, NoticeCode, Stats, StreamItem

MAX_WAITING_NOTICES = 16


class Outbox:
    def __init__(self, media_limit: int) -> None:
        self._items: deque[StreamItem] = deque()
        self._media = 0
        self._notices = 0
        self._notices_dropped = 0
        self.media_limit = media_limit
        self._closed = False
        self._error: PipelineError | None = None
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def media_room(self, frames: int = 1) -> bool:
        return self._media + frames <= self.media_limit

    async def wait_for_room(self, frames: int = 1) -> None:
        while not self.media_room(frames) and not self._closed:
            self._changed.clear()
            await self._changed.wait()

    def put(self, item: StreamItem) -> None:
        if self._closed:
            return
        if isinstance(item, AVFrame):
            self._media += 1
        elif isinstance(item, Notice):
            if self._notices >= MAX_WAITING_NOTICES:
                self._notices_dropped += 1
                return
            self._notices += 1
        elif isinstance(item, Stats):
            for i in range(len(self._items) - 1, -1, -1):
                if isinstance(self._items[i], Stats):
                    self._items[i] = item
                    return
        self._items.append(item)
        self._changed.set()

    def close(self, error: PipelineError | None = None) -> None:
        """No more items; the consumer gets what is queued, then the end (or `error`)."""
        if not self._closed:
            self._closed = True
            self._error = error
            self._changed.set()

    async def get(self) -> StreamItem:
        """The next item; StopAsyncIteration after the last, or the stream's error."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        item = self._items.popleft()
        if isinstance(item, AVFrame):
            self._media -= 1
        elif isinstance(item, Notice):
            self._notices -= 1
            if self._notices_dropped and self._notices == 0:
                dropped, self._notices_dropped = self._notices_dropped, 0
                self._notices += 1
                self._items.append(
                    Notice(NoticeCode.NOTICES_DROPPED, f"{dropped} notices were dropped: the "
                                                       f"consumer did not read them")
                )
        self._changed.set()
        return item
