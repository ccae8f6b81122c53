"""Each video frame with the speech audio of the same pts: the node sends the two apart."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import numpy as np

V = TypeVar("V")


class AvPairer(Generic[V]):
    """Video items wait for the audio packet with their pts.

    The node sends audio for every frame, so a frame waits at most one packet. A frame whose
    audio never came is released (with `None`) once audio past it arrives, or at the end;
    audio older than the frames released is dropped, since nothing will claim it.
    """

    def __init__(self, pts_of: Callable[[V], int]) -> None:
        self._pts_of = pts_of
        self._waiting: collections.deque[V] = collections.deque()
        self._audio: dict[int, np.ndarray] = {}
        self._latest_audio = -1

    def add_video(self, items: Iterable[V]) -> None:
        self._waiting.extend(items)

    def add_audio(self, pts: int, samples: np.ndarray) -> None:
        self._audio[pts] = samples
        self._latest_audio = max(self._latest_audio, pts)

    def ready(self, at_end: bool = False) -> list[tuple[V, np.ndarray | None]]:
        """The frames whose audio is settled, in order, each with its audio (None: none came)."""
        out: list[tuple[V, np.ndarray | None]] = []
        while self._waiting:
            pts = self._pts_of(self._waiting[0])
            if pts in self._audio:
                audio: np.ndarray | None = self._audio.pop(pts)
            elif at_end or self._latest_audio > pts:
                audio = None
            else:
                break
            out.append((self._waiting.popleft(), audio))
        if out:
            shown = self._pts_of(out[-1][0])
            for stale in [p for p in self._audio if p <= shown]:
                del self._audio[stale]
        return out
