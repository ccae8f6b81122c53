"""Blocking PCM streams to a PulseAudio sink or from a source (libpulse-simple through ctypes).

PipeWire answers the same calls through pipewire-pulse. Only s16le mono is used: the virtual
microphone and the capture are mono at the node's clock rate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

_PA_SAMPLE_S16LE = 3
_PA_STREAM_PLAYBACK = 1
_PA_STREAM_RECORD = 2
_UNSET = 0xFFFFFFFF  # (uint32_t) -1: let the server choose


class PulseError(RuntimeError):
    """A PulseAudio call failed; the message is the server's own."""


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [
        ("maxlength", ctypes.c_uint32),
        ("tlength", ctypes.c_uint32),
        ("prebuf", ctypes.c_uint32),
        ("minreq", ctypes.c_uint32),
        ("fragsize", ctypes.c_uint32),
    ]


_libs: tuple[Any, Any] | None = None
_libs_lock = threading.Lock()


def _load() -> tuple[Any, Any]:
    global _libs
    with _libs_lock:
        if _libs is None:
            names = [ctypes.util.find_library("pulse-simple") or "libpulse-simple.so.0",
                     ctypes.util.find_library("pulse") or "libpulse.so.0"]
            try:
                simple, pulse = (ctypes.CDLL(name) for name in names)
            except OSError:
                raise PulseError(
                    "libpulse is not installed; install PulseAudio's client library "
                    "(Debian/Ubuntu: libpulse0, Fedora: pulseaudio-libs)"
                ) from None
            simple.pa_simple_new.restype = ctypes.c_void_p
            simple.pa_simple_new.argtypes = [
                ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                ctypes.POINTER(_SampleSpec), ctypes.c_void_p, ctypes.POINTER(_BufferAttr),
                ctypes.POINTER(ctypes.c_int),
            ]
            for name in ("pa_simple_write", "pa_simple_read"):
                fn = getattr(simple, name)
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
            simple.pa_simple_get_latency.restype = ctypes.c_uint64
            simple.pa_simple_get_latency.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
            simple.pa_simple_flush.restype = ctypes.c_int
            simple.pa_simple_flush.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
            simple.pa_simple_free.restype = None
            simple.pa_simple_free.argtypes = [ctypes.c_void_p]
            pulse.pa_strerror.restype = ctypes.c_char_p
            pulse.pa_strerror.argtypes = [ctypes.c_int]
            _libs = (simple, pulse)
        return _libs


class _Stream:
    def __init__(
        self,
        direction: int,
        device: str | None,
        rate: int,
        app_name: str,
        stream_name: str,
        buffer_ms: int,
    ) -> None:
        self._simple, self._pulse = _load()
        self.rate = rate
        spec = _SampleSpec(_PA_SAMPLE_S16LE, rate, 1)
        nbytes = rate * 2 * buffer_ms // 1000
        if direction == _PA_STREAM_PLAYBACK:
            # tlength: how far ahead of the sink we write; a full buffer blocks the writer.
            # prebuf: start playing after 20 ms. The default (a full tlength) can wait for
            # more than the server lets a writer queue, which stalls the start for seconds.
            prebuf = min(nbytes, rate * 2 * 20 // 1000)
            attr = _BufferAttr(_UNSET, nbytes, prebuf, _UNSET, _UNSET)
        else:
            # fragsize: how much the server gathers before handing it over.
            attr = _BufferAttr(_UNSET, _UNSET, _UNSET, _UNSET, nbytes)
        error = ctypes.c_int(0)
        self._handle = self._simple.pa_simple_new(
            None, app_name.encode(), direction, device.encode() if device else None,
            stream_name.encode(), ctypes.byref(spec), None, ctypes.byref(attr), ctypes.byref(error),
        )
        if not self._handle:
            what = f"'{device}'" if device else "the default device"
            raise PulseError(f"cannot open a PulseAudio stream on {what}: {self._strerror(error)}")

    def _strerror(self, error: ctypes.c_int) -> str:
        message = self._pulse.pa_strerror(error.value)
        return message.decode() if message else f"error {error.value}"

    def _check(self, result: int, error: ctypes.c_int, what: str) -> None:
        if result < 0:
            raise PulseError(f"PulseAudio {what} failed: {self._strerror(error)}")

    def latency_s(self) -> float:
        """Playback: time until the last written sample is heard. Record: age of the oldest unread sample."""
        error = ctypes.c_int(0)
        usec = self._simple.pa_simple_get_latency(self._handle, ctypes.byref(error))
        if usec == 0xFFFFFFFFFFFFFFFF:
            raise PulseError(f"PulseAudio latency query failed: {self._strerror(error)}")
        return usec / 1e6

    def close(self) -> None:
        if self._handle:
            self._simple.pa_simple_free(self._handle)
            self._handle = None

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PulsePlayback(_Stream):
    """Write int16 mono PCM to a sink; `write` blocks while the server's buffer is full."""

    def __init__(self, sink: str | None, rate: int, buffer_ms: int = 60, name: str = "avatar speech") -> None:
        super().__init__(_PA_STREAM_PLAYBACK, sink, rate, "avatar cam", name, buffer_ms)

    def write(self, pcm: bytes) -> None:
        error = ctypes.c_int(0)
        self._check(self._simple.pa_simple_write(self._handle, pcm, len(pcm), ctypes.byref(error)), error, "write")


class PulseCapture(_Stream):
    """Read int16 mono PCM from a source (a microphone, or any source by name)."""

    def __init__(self, source: str | None, rate: int, fragment_ms: int = 20, name: str = "avatar puppet") -> None:
        super().__init__(_PA_STREAM_RECORD, source, rate, "avatar cam", name, fragment_ms)

    def read(self, nbytes: int) -> bytes:
        buffer = ctypes.create_string_buffer(nbytes)
        error = ctypes.c_int(0)
        self._check(self._simple.pa_simple_read(self._handle, buffer, nbytes, ctypes.byref(error)), error, "read")
        return buffer.raw
