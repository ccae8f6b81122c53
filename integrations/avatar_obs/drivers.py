"""What makes the avatar speak: the host's microphone (or another device, or a file played as one).

Capture runs on a thread. On Linux desktops (PulseAudio or PipeWire) it reads the default
source, or a named one, through `parec`; other inputs go through FFmpeg's input devices (ALSA,
AVFoundation on macOS, DirectShow on Windows) or files, so no extra audio library is needed. A
voice gate every edge shares (avatar_client.voice_gate) turns the continuous signal into
turns: speech opens a turn (with the audio from just before, so first syllables are not
clipped), and a pause closes it, so the avatar returns to its idle look between sentences.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from avatar_client.voice_gate import VoiceGate

from .errors import NodeUnavailable

log = logging.getLogger(__name__)

CAPTURE_RATE = 48_000
CHUNK_S = 0.02
PULSE = "pulse"  # read through parec (PulseAudio, or PipeWire's pulse server)
_SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")


@dataclass(frozen=True)
class AudioInput:
    """A PulseAudio source, an FFmpeg input device, or a file."""

    url: str  # source/device name ("" = the default PulseAudio source) or file path
    format: str | None  # "pulse", an FFmpeg input format (alsa, avfoundation, dshow...), None for files
    realtime: bool  # a file must be paced to behave like a microphone

    def describe(self) -> str:
        if self.format == PULSE:
            return f"PulseAudio source {self.url!r}" if self.url else "default PulseAudio source"
        return (
            f"{self.format} device {self.url!r}"
            if self.format
            else f"file {self.url} (played as a microphone)"
        )


def default_microphone() -> AudioInput:
    if sys.platform == "darwin":
        return AudioInput(":0", "avfoundation", realtime=False)
    if sys.platform == "win32":
        raise ValueError('on Windows name the device: --mic "dshow:audio=Microphone (Your Device)"')
    if shutil.which("parec"):
        return AudioInput("", PULSE, realtime=False)
    return AudioInput("default", "alsa", realtime=False)


def parse_audio_input(spec: str | None) -> AudioInput:
    """`None`/"" = the default microphone; "pulse[:SOURCE]"; "FORMAT:DEVICE" = an FFmpeg input
    device; anything else must be an audio file."""
    if not spec:
        return default_microphone()
    path = Path(spec)
    if path.exists():
        return AudioInput(str(path), None, realtime=True)
    fmt, sep, device = spec.partition(":")
    if fmt == PULSE:
        if not shutil.which("parec"):
            raise ValueError("--mic pulse needs parec: install pulseaudio-utils (PipeWire serves it too)")
        return AudioInput(device, PULSE, realtime=False)
    if sep and fmt in av.formats_available:
        return AudioInput(device, fmt, realtime=False)
    if sep and fmt in ("dshow", "avfoundation", "jack", "oss", "sndio", "openal"):
        raise ValueError(f"this FFmpeg build has no {fmt!r} input; try pulse:SOURCE or alsa:DEVICE")
    raise ValueError(
        f"--mic {spec!r} is neither an audio file nor a device (pulse:SOURCE, alsa:hw:1, avfoundation::0...)"
    )


class AudioCapture(Protocol):
    """An opened input; opening fails at once, with a clear message, for a bad device or file."""

    source: AudioInput

    def chunks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """Mono int16 chunks at CAPTURE_RATE as they arrive, until `stop` or the input ends."""
        ...

    def close(self) -> None:
        """Idempotent. Call it from the thread reading `chunks()`, or when nothing reads."""
        ...


def open_capture(source: AudioInput) -> AudioCapture:
    if source.format == PULSE:
        return PulseCapture(source)
    return FfmpegCapture(source)


class PulseCapture:
    """The microphone through `parec`: exact samples at CAPTURE_RATE, mono, s16le."""

    def __init__(self, source: AudioInput) -> None:
        self.source = source
        command = [
            "parec",
            "--raw",
            "--format=s16le",
            f"--rate={CAPTURE_RATE}",
            "--channels=1",
            f"--latency-msec={round(CHUNK_S * 1000)}",
        ]
        if source.url:
            command += ["--device", source.url]
        try:
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as error:
            raise OSError(
                f"cannot run parec for the {source.describe()}: {error.strerror or error}"
            ) from None
        try:
            self._process.wait(0.5)  # a wrong source or no sound server ends it at once
        except subprocess.TimeoutExpired:
            pass
        else:
            assert self._process.stderr is not None
            lines = self._process.stderr.read().decode(errors="replace").strip().splitlines()
            raise OSError(f"cannot open the {source.describe()}: {lines[-1] if lines else 'parec stopped'}")
        self._lock = threading.Lock()
        self._closed = False

    def chunks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        size = round(CAPTURE_RATE * CHUNK_S) * 2
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while not stop.is_set():
                data = stdout.read(size)
                if len(data) < size:
                    return  # parec ended: the sound server went away
                yield np.frombuffer(data, "<i2").copy()
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._process.terminate()
        try:
            self._process.wait(2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for pipe in (self._process.stdout, self._process.stderr):
            if pipe is not None:
                pipe.close()


class FfmpegCapture:
    """A file, or an FFmpeg input device."""

    def __init__(self, source: AudioInput) -> None:
        self.source = source
        if source.format == "alsa" and "ALSA_CONFIG_PATH" not in os.environ and _SYSTEM_ALSA_CONF.exists():
            # PyAV's bundled libasound looks for its configuration where it was built.
            os.environ["ALSA_CONFIG_PATH"] = str(_SYSTEM_ALSA_CONF)
        try:
            self._container = av.open(source.url, format=source.format, timeout=5.0)
        except (av.error.FFmpegError, OSError) as error:
            raise OSError(
                f"cannot open the {source.describe()}: {getattr(error, 'strerror', None) or error}"
            ) from None
        if not self._container.streams.audio:
            self._container.close()
            raise OSError(f"the {source.describe()} has no audio")
        self._closed = False
        self._lock = threading.Lock()

    def chunks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """Mono int16 chunks at CAPTURE_RATE as they arrive (a file: paced at 1x), until `stop`."""
        size = round(CAPTURE_RATE * CHUNK_S)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=CAPTURE_RATE)
        started = time.monotonic()
        sent = 0
        pending = np.zeros(0, np.int16)
        try:
            for frame in self._container.decode(self._container.streams.audio[0]):
                if stop.is_set():
                    return
                for out in resampler.resample(frame):
                    pending = np.concatenate([pending, out.to_ndarray().reshape(-1)])
                while pending.size >= size:
                    piece, pending = pending[:size], pending[size:]
                    if self.source.realtime:  # a file: wait until this chunk would have been heard
                        delay = started + sent / CAPTURE_RATE - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    sent += piece.size
                    yield piece
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._container.close()


class SpeechSink(Protocol):
    async def send_audio(self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool = False) -> None: ...

    async def end_turn(self) -> None: ...


class MicrophoneDriver:
    """Feeds a capture into a `SpeechSink` through a `VoiceGate` until cancelled or the input ends."""

    def __init__(
        self,
        capture: AudioCapture,
        sink: SpeechSink,
        gate: VoiceGate | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.capture = capture
        self.source = capture.source
        self.sink = sink
        self.gate = gate or VoiceGate()
        self._on_error = on_error or (lambda message: log.warning("%s", message))
        self.turns = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue(maxsize=250)
        stop = threading.Event()

        def produce() -> None:
            try:
                for chunk in self.capture.chunks(stop):
                    loop.call_soon_threadsafe(_put_latest, chunks, chunk)
            except BaseException as error:  # reported on the event loop
                loop.call_soon_threadsafe(_put_latest, chunks, error)
                return
            loop.call_soon_threadsafe(_put_latest, chunks, None)

        reader = threading.Thread(target=produce, name="avatar-obs-mic", daemon=True)
        reader.start()
        try:
            while True:
                item = await chunks.get()
                if item is None:
                    if self.gate.open:
                        await _quietly(self.sink.end_turn(), self._on_error)
                    log.info("the %s ended", self.source.describe())
                    return
                if isinstance(item, BaseException):  # the device went away: the stream goes on
                    self._on_error(
                        f"the {self.source.describe()} stopped ({item}); the avatar goes on without it"
                    )
                    return
                step = self.gate.feed(item, CAPTURE_RATE)
                for piece in step.chunks:
                    await _quietly(self.sink.send_audio(piece, CAPTURE_RATE), self._on_error)
                if step.closes:
                    self.turns += 1
                    await _quietly(self.sink.end_turn(), self._on_error)
        finally:
            # The reader ends at its next chunk and closes the input itself (closing it from
            # here while it decodes would pull the device out from under it).
            stop.set()
            await asyncio.to_thread(reader.join, 1.0)


def _put_latest(
    queue: asyncio.Queue[np.ndarray | BaseException | None], item: np.ndarray | BaseException | None
) -> None:
    if queue.full():  # the loop is far behind: old microphone audio is worthless
        queue.get_nowait()
    queue.put_nowait(item)


async def _quietly(call: Awaitable[None], on_error: Callable[[str], None]) -> None:
    """Speech sent while the node is away is lost, not fatal: the host keeps talking."""
    try:
        await call
    except NodeUnavailable as error:
        on_error(str(error))
