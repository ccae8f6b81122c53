"""Named sound devices through PortAudio (the `sounddevice` package), for systems without
PulseAudio/PipeWire: on Windows a virtual cable such as VB-Audio's "CABLE Input" (meeting apps
then pick "CABLE Output" as the microphone), on macOS "BlackHole 2ch". A device is chosen by
any unique part of its name as `python -m sounddevice` lists it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import CamError
from .playout import monotonic


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as error:
        raise CamError(
            f"a named audio device needs the 'sounddevice' package and PortAudio ({error}): "
            "pip install sounddevice"
        ) from None
    return sounddevice


class SoundDeviceOutput:
    """Plays speech on a named output device; `write` blocks while its buffer is full."""

    def __init__(self, name: str, rate: int = 48_000) -> None:
        sd = _sounddevice()
        self.rate = rate
        try:
            self._stream = sd.OutputStream(device=name, samplerate=rate, channels=1, dtype="int16", latency="low")
            self._stream.start()
        except (ValueError, sd.PortAudioError) as error:
            raise CamError(
                f"cannot open the audio output {name!r} ({error}); list devices with `python -m sounddevice`"
            ) from None
        self.name = str(sd.query_devices(self._stream.device)["name"])

    def write(self, pcm: bytes) -> None:
        self._stream.write(np.frombuffer(pcm, np.int16).reshape(-1, 1))

    def latency_s(self) -> float:
        # PortAudio's own estimate of the output buffering: what is queued plays within it.
        return float(self._stream.latency)

    def close(self) -> None:
        self._stream.close()


class SoundDeviceCapture:
    """The puppet microphone by name, with the same callback as MicCapture."""

    def __init__(
        self,
        name: str | None,
        on_chunk: Callable[[np.ndarray, float], None],
        on_error: Callable[[str], None],
        rate: int = 48_000,
        chunk_ms: int = 20,
    ) -> None:
        sd = _sounddevice()
        self.rate = rate
        self._on_chunk = on_chunk
        self._on_error = on_error
        self._lock = threading.Lock()

        def callback(data: np.ndarray, frames: int, timing: Any, status: Any) -> None:
            # inputBufferAdcTime is when the first sample was captured, on the stream's clock.
            age = max(0.0, timing.currentTime - timing.inputBufferAdcTime) if timing.currentTime else 0.0
            self._on_chunk(data[:, 0].copy(), monotonic() - age)

        try:
            self._stream = sd.InputStream(
                device=name, samplerate=rate, channels=1, dtype="int16",
                blocksize=rate * chunk_ms // 1000, callback=callback,
            )
        except (ValueError, sd.PortAudioError) as error:
            raise CamError(
                f"cannot record from {name or 'the default microphone'!r} ({error}); "
                "list devices with `python -m sounddevice`"
            ) from None

    def start(self) -> None:
        self._stream.start()

    def stop(self) -> None:
        self._stream.close()
