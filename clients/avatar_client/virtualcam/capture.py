"""The user's own microphone, read in a thread and stamped with when each chunk was spoken."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from .errors import CamError
from .playout import monotonic
from .pulse_stream import PulseCapture, PulseError


class MicCapture:
    """Reads `source` (a PulseAudio/PipeWire source name, or the default microphone) in
    `chunk_ms` pieces and calls `on_chunk(samples, spoken_at)` from its own thread, where
    `spoken_at` is the monotonic time of the chunk's first sample."""

    def __init__(
        self,
        source: str | None,
        on_chunk: Callable[[np.ndarray, float], None],
        on_error: Callable[[str], None],
        rate: int = 48_000,
        chunk_ms: int = 20,
    ) -> None:
        self.rate = rate
        self._samples = rate * chunk_ms // 1000
        try:
            self._stream = PulseCapture(source, rate, fragment_ms=chunk_ms)
        except PulseError as error:
            which = f"the microphone {source!r}" if source else "the default microphone"
            raise CamError(
                f"cannot record from {which} ({error}); list microphones with `pactl list short sources`"
            ) from None
        self._on_chunk = on_chunk
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avatar-cam-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        # A microphone delivers samples at its rate: sample n was spoken at base + n / rate.
        # The base is the earliest (arrival - n / rate) seen, since a sample cannot arrive
        # before it was spoken; the server's latency figures swing when sources change state.
        base = float("inf")
        count = 0
        while not self._stop.is_set():
            try:
                data = self._stream.read(self._samples * 2)
            except PulseError as error:
                self._on_error(f"recording from the microphone stopped ({error})")
                return
            base = min(base, monotonic() - (count + self._samples) / self.rate)
            self._on_chunk(np.frombuffer(data, np.int16), base + count / self.rate)
            count += self._samples

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():  # never free the stream under a read in progress
            self._stream.close()
