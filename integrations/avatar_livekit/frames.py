"""What a renderer hands the room: pictures with exactly their audio, and turn progress, in order.

Both ways of rendering (the pipeline in this process, a node over gRPC) are seen through
this one shape, so publishing, interrupts and playback reports are written once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    """One video frame and the speech audio that plays during it (exactly 1/fps of it)."""

    image: np.ndarray = field(repr=False)  # RGB uint8 (height, width, 3)
    audio: np.ndarray = field(repr=False)  # int16 mono at the renderer's sample rate
    speaking: bool


@dataclass(frozen=True)
class TurnStarted:
    turn_id: str


@dataclass(frozen=True)
class TurnFinished:
    turn_id: str
    played_s: float  # speech the renderer delivered before the turn ended
    interrupted: bool


RenderItem = RenderedFrame | TurnStarted | TurnFinished


@dataclass(frozen=True)
class VideoFormat:
    width: int
    height: int
    fps: float
    sample_rate: int

    @property
    def frame_samples(self) -> float:
        return self.sample_rate / self.fps


class Renderer(Protocol):
    """Speech in, frames out at 1x (idle frames when there is no speech), until closed."""

    format: VideoFormat

    async def push_speech(self, pcm: bytes, sample_rate: int, channels: int, turn_id: str) -> None:
        """s16le speech for turn `turn_id`; consecutive calls with one id form one turn."""

    async def end_turn(self, turn_id: str) -> None:
        """No more speech for `turn_id`; it finishes once played."""

    def interrupt(self) -> None:
        """Stop speaking at the next frame and drop queued speech (each dropped turn finishes)."""

    def items(self) -> AsyncIterator[RenderItem]:
        """Frames and turn events, in order, until the renderer is closed."""

    async def aclose(self) -> None:
        """Return every resource; idempotent and safe to cancel."""
