"""Listening to the virtual microphone itself, as a meeting app does, to measure when what was
written is really heard there. The sound server's latency figure is right on PulseAudio but
can be tens of milliseconds off elsewhere (PipeWire's pulse layer); the measured difference
corrects the speech clock the camera follows, so the A/V offset shown is the one at the
devices."""

from __future__ import annotations

import collections
import statistics
import threading
from collections.abc import Callable

import numpy as np

from .playout import Playout, monotonic
from .pulse_stream import PulseCapture, PulseError


def best_match(reference: np.ndarray, signal: np.ndarray) -> tuple[int, float]:
    """Offset in `signal` where `reference` matches best, and the normalised correlation there."""
    ref = reference.astype(np.float64)
    sig = signal.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(ref) + len(sig))))
    corr = np.fft.irfft(np.fft.rfft(sig, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(sig) - len(ref) + 1]
    energy = np.concatenate([[0.0], np.cumsum(sig**2)])
    norms = np.sqrt(np.maximum(energy[len(ref) :] - energy[: len(sig) - len(ref) + 1], 0.0))
    score = corr / (np.linalg.norm(ref) * norms + 1e-9)
    score[norms < 1e-3 * np.linalg.norm(ref)] = 0.0
    lag = int(np.argmax(score))
    return lag, float(score[lag])


class MicMonitor:
    """Reads `source` in a thread; once a second, if the last second written held speech, finds
    it in what was read and sets `playout.latency_correction` to the median error of the last
    few measurements."""

    WINDOW_S = 0.8  # audio compared
    SETTLED_S = 0.3  # compared once the server says it was heard this long ago
    SEARCH_S = 0.25  # how wrong the server's figure may be
    MIN_RMS = 300.0  # silence cannot be located
    MIN_MATCH = 0.9
    KEEP = 5

    def __init__(self, source: str, playout: Playout, on_error: Callable[[str], None]) -> None:
        self._playout = playout
        self._rate = playout.rate
        self._on_error = on_error
        self._stream = PulseCapture(source, self._rate, fragment_ms=10, name="avatar cam self-check")
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (index, samples)
        self._errors: collections.deque[float] = collections.deque(maxlen=self.KEEP)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avatar-cam-monitor", daemon=True)
        self.measurements = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        chunk = self._rate // 100
        base = float("inf")  # time of sample 0: the earliest (arrival - index / rate)
        count = 0
        next_check = monotonic() + 1.0
        while not self._stop.is_set():
            try:
                data = self._stream.read(chunk * 2)
            except PulseError as error:
                self._on_error(f"listening to the virtual microphone stopped ({error}); A/V offset uncorrected")
                return
            now = monotonic()
            base = min(base, now - (count + chunk) / self._rate)
            self._chunks.append((count, np.frombuffer(data, np.int16)))
            count += chunk
            while self._chunks and self._chunks[0][0] < count - 4 * self._rate:
                self._chunks.popleft()
            if now >= next_check:
                next_check = now + 1.0
                self._measure(base)

    def _measure(self, base: float) -> None:
        recent = self._playout.recent_audio(self.WINDOW_S, self.SETTLED_S)
        if recent is None:
            return
        written, predicted = recent
        if float(np.sqrt(np.mean(written.astype(np.float64) ** 2))) < self.MIN_RMS:
            return
        start = int(round((predicted - self.SEARCH_S - base) * self._rate))
        stop = start + len(written) + int(2 * self.SEARCH_S * self._rate)
        first = self._chunks[0][0] if self._chunks else 0
        if start < first or not self._chunks:
            return
        heard = np.concatenate([samples for _, samples in self._chunks])[start - first : stop - first]
        if len(heard) < stop - start:
            return
        lag, match = best_match(written, heard)
        if match < self.MIN_MATCH:
            return
        self._errors.append(base + (start + lag) / self._rate - predicted)
        self._playout.latency_correction = statistics.median(self._errors)
        self.measurements += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._stream.close()
