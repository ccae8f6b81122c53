"""An append-only sample buffer addressed by absolute position, whose played head can be released."""

from __future__ import annotations

import functools

import numpy as np


def silence(length: int, dtype: type = np.int16) -> np.ndarray:
    """A read-only block of zeros, shared: idle frames and silent windows cost no allocation."""
    return _silence(length, np.dtype(dtype).str)


@functools.lru_cache(maxsize=64)
def _silence(length: int, dtype: str) -> np.ndarray:
    zeros = np.zeros(length, dtype=dtype)
    zeros.setflags(write=False)
    return zeros


class SampleBuffer:
    """Samples at absolute positions [released, end). Appends are amortised O(1);
    `release_before` frees what will not be read again, so a long turn or an endless
    listen track holds only its unread tail."""

    def __init__(self, dtype: type) -> None:
        self._data: np.ndarray = np.zeros(0, dtype=dtype)
        self._base = 0  # absolute position of _data[0]
        self._size = 0  # valid samples in _data

    @property
    def end(self) -> int:
        """Absolute position after the last sample appended."""
        return self._base + self._size

    @property
    def released(self) -> int:
        """Samples before this position are gone."""
        return self._base

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if not n:
            return
        need = self._size + n
        if need > len(self._data):
            grown = np.zeros(max(need, 2 * len(self._data), 4096), dtype=self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : need] = samples
        self._size = need

    def window(self, start: int, length: int) -> np.ndarray:
        """A copy of samples [start, start+length); zeros where nothing is (yet) stored."""
        if start >= self._base and start + length <= self.end:
            return self._data[start - self._base : start - self._base + length].copy()
        out = np.zeros(length, dtype=self._data.dtype)
        lo, hi = max(start, self._base), min(start + length, self.end)
        if hi > lo:
            out[lo - start : hi - start] = self._data[lo - self._base : hi - self._base]
        return out

    def release_before(self, position: int) -> None:
        """Forget samples before `position`; memory is returned once half the buffer is free."""
        drop = min(position, self.end) - self._base
        if drop <= 0:
            return
        if 2 * drop < len(self._data):
            # Cheap bookkeeping until enough is released to be worth a copy.
            self._data[:drop] = 0
            if drop < self._size and 4 * drop < len(self._data):
                return
        kept = self._data[drop : self._size].copy()
        self._data = kept
        self._base += drop
        self._size = len(kept)
