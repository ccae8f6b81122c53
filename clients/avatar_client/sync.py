"""Blocking wrappers for scripts: the async client runs on a private event-loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np

from .client import AsyncAvatarClient, SessionModeName
from .decode import MediaFrame
from .events import Ended, Event, NodeInfo, Notice, PreparedAvatar, SessionReady, Stats
from .session import AvatarSession

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; `run` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="avatar-client", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking AvatarClient calls cannot be made from its own event loop")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the AvatarClient is closed; create a new one")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            if not self.loop.is_closed():
                self.run(_aclose(agen))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


async def _aclose(agen: AsyncIterator[Any]) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        await close()


class AvatarSessionSync:
    """Blocking view of an `AvatarSession`; same methods. Sending from one thread while
    another iterates `events()` or `frames()` is fine."""

    def __init__(self, session: AvatarSession, loop: _LoopThread) -> None:
        self._session = session
        self._loop = loop

    @property
    def ready(self) -> SessionReady:
        return self._session.ready

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def ended(self) -> Ended | None:
        return self._session.ended

    @property
    def last_stats(self) -> Stats | None:
        return self._session.last_stats

    @property
    def notices(self) -> list[Notice]:
        return self._session.notices

    def send_audio(
        self,
        pcm: np.ndarray | bytes,
        sample_rate: int,
        end_of_turn: bool = False,
        turn_id: str = "",
        channels: int = 1,
    ) -> None:
        self._loop.run(self._session.send_audio(pcm, sample_rate, end_of_turn, turn_id, channels))

    def end_turn(self, turn_id: str = "") -> None:
        self._loop.run(self._session.end_turn(turn_id))

    def say(self, text: str, voice: str = "", turn_id: str = "") -> None:
        self._loop.run(self._session.say(text, voice, turn_id))

    def send_listen_audio(self, pcm: np.ndarray | bytes, sample_rate: int, channels: int = 1) -> None:
        self._loop.run(self._session.send_listen_audio(pcm, sample_rate, channels))

    def interrupt(self) -> None:
        self._loop.run(self._session.interrupt())

    def behaviour(self, name: str) -> None:
        self._loop.run(self._session.behaviour(name))

    def set_prompt(self, prompt: str) -> None:
        self._loop.run(self._session.set_prompt(prompt))

    def end(self, discard_pending: bool = False) -> None:
        self._loop.run(self._session.end(discard_pending))

    def events(self) -> Iterator[Event]:
        return self._loop.iterate(self._session.events())

    def frames(self) -> Iterator[MediaFrame]:
        return self._loop.iterate(self._session.frames())

    def close(self) -> None:
        self._loop.run(self._session.aclose())

    def __enter__(self) -> AvatarSessionSync:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AvatarClient:
    """Blocking client with the same methods as `AsyncAvatarClient`.

    >>> with AvatarClient("127.0.0.1:50051") as client:
    ...     print(client.node_info().engines)
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        self._loop = _LoopThread()
        self._client = AsyncAvatarClient(target, token, credentials=credentials)

    def node_info(self, timeout: float | None = 10.0) -> NodeInfo:
        return self._loop.run(self._client.node_info(timeout))

    def prepare_avatar(
        self, image: bytes | str | Path, engine: str = "", timeout: float | None = 60.0
    ) -> PreparedAvatar:
        return self._loop.run(self._client.prepare_avatar(image, engine, timeout))

    def start_session(
        self,
        image: bytes | str | Path | None = None,
        *,
        avatar_id: str = "",
        engine: str = "",
        width: int = 848,
        height: int = 480,
        fps: float = 0.0,
        mode: SessionModeName = "live",
        voice: str = "",
        prompt: str = "",
        audio_sample_rate: int = 48_000,
        bitrate_kbps: int = 0,
        keyframe_interval: int = 0,
        stats_interval_ms: int = 0,
    ) -> AvatarSessionSync:
        session = self._loop.run(
            self._client.start_session(
                image,
                avatar_id=avatar_id,
                engine=engine,
                width=width,
                height=height,
                fps=fps,
                mode=mode,
                voice=voice,
                prompt=prompt,
                audio_sample_rate=audio_sample_rate,
                bitrate_kbps=bitrate_kbps,
                keyframe_interval=keyframe_interval,
                stats_interval_ms=stats_interval_ms,
            )
        )
        return AvatarSessionSync(session, self._loop)

    def close(self) -> None:
        """Cancel open sessions, close the channel and stop the loop thread. Idempotent."""
        if not self._loop.loop.is_closed():
            self._loop.run(self._client.aclose())
        self._loop.stop()

    def __enter__(self) -> AvatarClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
