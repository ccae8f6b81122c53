"""What the virtual camera measures about itself, and the status line that shows it."""

from __future__ import annotations

import collections
import statistics
import sys
import threading
from typing import TextIO

from .playout import Playout, monotonic


class Meters:
    """Thread-safe figures: fps delivered to the camera, A/V offset at the devices (when each
    frame's first sample is heard minus when the frame first reached the camera), node latency
    (speech handed to the source until it is heard), reconnects and the connection state."""

    WINDOW_S = 2.0

    def __init__(self, playout: Playout, target_offset_ms: float = 0.0) -> None:
        self._playout = playout
        self._lock = threading.Lock()
        self._sends: collections.deque[float] = collections.deque()
        self._offsets: collections.deque[tuple[float, float]] = collections.deque()
        self._last_pos: int | None = None
        self._unheard: collections.deque[tuple[int, float]] = collections.deque(maxlen=200)
        self._sent_at: dict[str, float] = {}  # turn id -> when its speech was handed over
        self._started: dict[str, int] = {}  # turn id -> media position of its first sample
        self.target_offset_ms = target_offset_ms
        self.frames_sent = 0
        self.node_latency_ms: float | None = None
        self.reconnects = 0
        self.speech_underruns = 0  # this session's, as the node counts them
        self.frames_dropped = 0
        self.connection = "starting"
        self.mic = "off"
        self.camera = "off"

    # camera thread
    def camera_sent(self, when: float, pos: int | None) -> None:
        offset = None
        if pos is not None and pos != self._last_pos:
            self._last_pos = pos
            heard = self._playout.audio_time_of(pos)
            if heard is not None:
                offset = heard - when
            else:  # its audio is not written yet (a large positive correction): look again later
                self._unheard.append((pos, when))
        with self._lock:
            self.frames_sent += 1
            self._sends.append(when)
            while self._sends and self._sends[0] < when - self.WINDOW_S:
                self._sends.popleft()
            if offset is not None:
                self._offsets.append((when, offset))
            self._trim_offsets(when)

    def _trim_offsets(self, now: float) -> None:
        while self._offsets and self._offsets[0][0] < now - self.WINDOW_S:
            self._offsets.popleft()

    def camera_fps(self) -> float | None:
        with self._lock:
            if len(self._sends) < 2 or monotonic() - self._sends[-1] > 1.0:
                return 0.0 if self._sends else None
            return (len(self._sends) - 1) / (self._sends[-1] - self._sends[0])

    def av_offset_ms(self) -> float | None:
        with self._lock:
            if not self._offsets:
                return None
            return 1000 * statistics.median(offset for _, offset in self._offsets)

    # event loop
    def speech_sent(self, turn_id: str, when: float) -> None:
        with self._lock:
            self._sent_at[turn_id] = when

    def turn_started(self, turn_id: str, pos: int) -> None:
        with self._lock:
            if turn_id in self._sent_at:
                self._started[turn_id] = pos

    def update(self) -> None:
        """Resolve frames and turns whose audio has now been written to the microphone device."""
        while self._unheard:
            pos, when = self._unheard[0]
            heard = self._playout.audio_time_of(pos)
            if heard is None and monotonic() - when < 2.0:
                break
            self._unheard.popleft()
            if heard is not None:
                with self._lock:
                    self._offsets.append((when, heard - when))
                    self._trim_offsets(monotonic())
        with self._lock:
            started = list(self._started.items())
        for turn_id, pos in started:
            heard = self._playout.audio_time_of(pos)
            if heard is None:
                continue
            with self._lock:
                sent = self._sent_at.pop(turn_id, None)
                self._started.pop(turn_id, None)
                if sent is not None:
                    self.node_latency_ms = 1000 * (heard - sent)

    def node_health(self, speech_underruns: int, frames_dropped: int) -> None:
        self.speech_underruns, self.frames_dropped = speech_underruns, frames_dropped

    def line(self) -> str:
        fps = self.camera_fps()
        offset = self.av_offset_ms()
        parts = [
            f"camera {fps:.1f} fps" if self.camera == "on" and fps is not None else f"camera {self.camera}",
            f"mic {self.mic}",
            "A/V " + (f"{offset:+.0f} ms" if offset is not None else "--")
            + (f" (set {self.target_offset_ms:+.0f})" if self.target_offset_ms else ""),
            "node latency " + (f"{self.node_latency_ms:.0f} ms" if self.node_latency_ms is not None else "--"),
            f"reconnects {self.reconnects}",
            *([f"late speech {self.speech_underruns}"] if self.speech_underruns else []),
            *([f"dropped {self.frames_dropped}"] if self.frames_dropped else []),
            self.connection + (", speaking" if self._playout.speaking else ""),
        ]
        return " | ".join(parts)


class StatusPrinter:
    """One status line, redrawn in place on a terminal; elsewhere printed every few seconds."""

    def __init__(self, meters: Meters, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self._meters = meters
        self._stream = stream
        self._enabled = enabled
        self.interactive = enabled and stream.isatty()
        self.interval_s = 0.5 if self.interactive else 2.0
        self._drawn = False

    def log(self, message: str) -> None:
        """A message on its own line (the status line is redrawn below it)."""
        if self.interactive and self._drawn:
            self._stream.write("\r\033[K")
            self._drawn = False
        self._stream.write(message + "\n")
        self._stream.flush()

    def draw(self) -> None:
        if not self._enabled:
            return
        line = "status: " + self._meters.line()
        if self.interactive:
            self._stream.write("\r\033[K" + line)
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self.interactive and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
