"""The audio writer: feeds the microphone device without a break and times every block."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from .playout import Playout, monotonic


class AudioDevice(Protocol):
    """Somewhere speech is played: the virtual microphone's sink, a named output device..."""

    rate: int

    def write(self, pcm: bytes) -> None:
        """Queue s16le mono PCM; blocks while the device's buffer is full (this paces the writer)."""

    def latency_s(self) -> float:
        """Seconds until the last written sample is heard."""

    def close(self) -> None: ...


class ClockOnlyDevice:
    """No sound device (`--no-mic`, or the microphone went away): keeps time with the monotonic
    clock so the camera still has a speech clock to follow."""

    LEAD_S = 0.04

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._end = 0.0

    def write(self, pcm: bytes) -> None:
        now = monotonic()
        self._end = max(self._end, now) + len(pcm) // 2 / self.rate
        wait = self._end - self.LEAD_S - now
        if wait > 0:
            time.sleep(wait)

    def latency_s(self) -> float:
        return max(0.0, self._end - monotonic())

    def close(self) -> None:
        pass


class AudioWriter:
    """A thread moving audio from the playout buffer to the device in blocks of `block_ms`.

    If the device fails (the sound server stopped), it reports once through `on_error` and
    carries on with a clock-only device, so the camera keeps running.
    """

    def __init__(
        self,
        playout: Playout,
        device: AudioDevice,
        block_ms: int = 10,
        on_error: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._playout = playout
        self._device = device
        self._block = playout.rate * block_ms // 1000
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avatar-cam-audio", daemon=True)
        self._running = threading.Event()
        self._samples_written = 0
        #: Times the device played everything it had before the next block came (this
        #: process was not scheduled in time): each is a dropout at the microphone.
        self.device_underruns = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            block = self._playout.next_audio_block(self._block)
            try:
                if self._running.is_set() and self._device.latency_s() < 0.002:
                    self.device_underruns += 1
                self._device.write(block.samples.tobytes())
                when = monotonic()
                latency = self._device.latency_s()
            except Exception as error:  # a device that fails must not stop the camera
                self._on_error(f"the microphone stopped working ({error}); continuing without it")
                self._device = ClockOnlyDevice(self._playout.rate)
                continue
            self._playout.written(block, when, latency)
            self._samples_written += len(block.samples)
            if self._samples_written / self._playout.rate - latency > 0.02:
                self._running.set()  # the device has begun to play what it was given

    def wait_running(self, timeout: float) -> bool:
        """Wait until the device plays (a new sink can take a second or two to start)."""
        return self._running.wait(timeout)

    def stop(self) -> None:
        """Stop writing (returns within one block). The device is closed by its owner."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
