"""Rendering speech to a file: a render-mode session recorded into an MP4."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .client import AsyncAvatarClient
from .events import Stats, TurnEvent, TurnKind, VideoPacket
from .mp4 import Mp4Writer
from .session import AvatarSession
from .text import split_text


class RenderProgress(Protocol):
    """Receives media-time progress of a render (e.g. a progress bar)."""

    def set_total(self, seconds: float) -> None: ...

    def advance_to(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class RenderResult:
    path: Path
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float  # media time written
    speech_s: float  # length of the speech rendered (from the node's turn report for text)
    wall_s: float
    stats: Stats | None

    @property
    def realtime_factor(self) -> float:
        return self.duration_s / self.wall_s if self.wall_s > 0 else 0.0


async def record_session(
    session: AvatarSession,
    path: str | Path,
    progress: RenderProgress | None = None,
    on_turn: Callable[[TurnEvent], None] | None = None,
) -> Mp4Writer:
    """Write everything the session sends into an MP4 until it ends; return the closed writer."""
    clock_rate = session.ready.clock_rate
    queued_s = 0.0  # text turns play one after another: the total is their sum
    with Mp4Writer.for_session(path, session.ready) as writer:
        async for event in session.events():
            writer.write(event)
            if isinstance(event, VideoPacket) and progress is not None:
                progress.advance_to((event.pts + event.duration) / clock_rate)
            elif isinstance(event, TurnEvent):
                if event.kind == TurnKind.QUEUED and event.duration_ms and progress is not None:
                    queued_s += event.duration_ms / 1000
                    progress.set_total(queued_s)
                if on_turn is not None:
                    on_turn(event)
    return writer


async def render_to_mp4(
    client: AsyncAvatarClient,
    output: str | Path,
    *,
    image: bytes | str | Path | None = None,
    avatar_id: str = "",
    speech: tuple[np.ndarray, int] | None = None,
    text: str | None = None,
    engine: str = "",
    width: int = 848,
    height: int = 480,
    fps: float = 0.0,
    voice: str = "",
    progress: RenderProgress | None = None,
) -> RenderResult:
    """Render `speech` (samples, sample_rate) or `text` as fast as the node runs, into `output`.

    The session ends after the speech is played out, so the file lasts as long as the speech.
    """
    if (speech is None) == (text is None):
        raise ValueError("pass exactly one of speech= or text=")
    began = time.monotonic()
    session = await client.start_session(
        image,
        avatar_id=avatar_id,
        engine=engine,
        width=width,
        height=height,
        fps=fps,
        mode="render",
        voice=voice,
    )
    async with session:

        async def send() -> None:
            if speech is not None:
                samples, rate = speech
                if progress is not None:
                    progress.set_total(len(samples) / rate)
                await session.send_audio(samples, rate, end_of_turn=True)
            else:  # a node takes MAX_TEXT_CHARS a turn: longer text is spoken as consecutive turns
                for part in split_text(text or ""):
                    await session.say(part, voice=voice)
            await session.end(discard_pending=False)

        speech_s = len(speech[0]) / speech[1] if speech is not None else 0.0

        def on_turn(turn: TurnEvent) -> None:
            nonlocal speech_s
            if turn.kind == TurnKind.QUEUED and text is not None:
                speech_s += turn.duration_ms / 1000

        sender = asyncio.create_task(send())
        recorder = asyncio.create_task(record_session(session, output, progress, on_turn))
        try:
            await asyncio.wait({sender, recorder}, return_when=asyncio.FIRST_EXCEPTION)
            if sender.done() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]
            writer = await recorder
        finally:
            for task in (sender, recorder):
                task.cancel()
            await asyncio.gather(sender, recorder, return_exceptions=True)
    ready = session.ready
    return RenderResult(
        path=Path(output),
        width=ready.width,
        height=ready.height,
        fps=ready.fps,
        frames=writer.frames_written,
        duration_s=writer.frames_written / ready.fps,
        speech_s=speech_s,
        wall_s=time.monotonic() - began,
        stats=session.last_stats,
    )
