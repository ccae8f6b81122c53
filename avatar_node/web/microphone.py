"""The browser's microphone, received on the peer connection, routed into the avatar stream.

Two uses, switched from the page at any time:
- `listen`: the user's voice goes to `push_listen`, so the avatar shows it is listening;
- `puppet`: the user's voice is the avatar's speech (`push_speech`, streamed at 1x as it
  arrives). A voice gate opens a turn on speech and closes it after a pause, so the avatar
  returns to its idle look between sentences.
`off` drops what arrives (the page also stops sending).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Literal

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from avatar_node.media.audio import level_dbfs
from avatar_node.pipeline import AvatarStream, PipelineError

log = logging.getLogger(__name__)

MicMode = Literal["off", "listen", "puppet"]
MIC_MODES: tuple[MicMode, ...] = ("off", "listen", "puppet")


def to_mono_int16(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame (s16 or flt, packed or planar, any channels) as mono int16 samples."""
    samples = frame.to_ndarray()
    channels = len(frame.layout.channels)
    floating = samples.dtype.kind == "f"
    if frame.format.is_planar:
        mixed = samples.reshape(channels, -1).astype(np.float64).mean(axis=0)
    else:
        mixed = samples.reshape(-1, channels).astype(np.float64).mean(axis=1)
    if floating:
        mixed *= 32767.0
    return np.clip(np.round(mixed), -32768, 32767).astype(np.int16)




class TurnGate:
    """Opens on speech, closes after `hang_s` of quiet; keeps `preroll_s` of audio from before it opened."""

    def __init__(self, threshold_dbfs: float = -45.0, hang_s: float = 0.6, preroll_s: float = 0.2) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.hang_s = hang_s
        self.preroll_s = preroll_s
        self.open = False
        self._quiet_s = 0.0
        self._preroll: deque[np.ndarray] = deque()
        self._preroll_s = 0.0

    def feed(self, chunk: np.ndarray, rate: int) -> tuple[list[np.ndarray], bool]:
        """(chunks to send now, whether the turn ends after them)."""
        seconds = chunk.size / rate
        loud = level_dbfs(chunk) >= self.threshold_dbfs
        if not self.open:
            self._preroll.append(chunk)
            self._preroll_s += seconds
            while self._preroll and self._preroll_s - self._preroll[0].size / rate >= self.preroll_s:
                self._preroll_s -= self._preroll.popleft().size / rate
            if not loud:
                return [], False
            self.open, self._quiet_s = True, 0.0
            out = list(self._preroll)
            self._preroll.clear()
            self._preroll_s = 0.0
            return out, False
        self._quiet_s = 0.0 if loud else self._quiet_s + seconds
        if self._quiet_s >= self.hang_s:
            self.open = False
            return [chunk], True
        return [chunk], False


class MicrophoneRouter:
    """Reads the remote audio track until it ends or the task is cancelled."""

    def __init__(self, stream: AvatarStream, mode: MicMode = "listen") -> None:
        self.stream = stream
        self.mode: MicMode = mode
        self.gate = TurnGate()
        self.received_ms = 0.0  # everything that arrived
        self.listen_ms = 0.0  # pushed as listen audio
        self.speech_ms = 0.0  # pushed as speech (puppet)
        self.turns = 0
        self.level_dbfs = -120.0

    def set_mode(self, mode: MicMode) -> None:
        if mode not in MIC_MODES:
            raise ValueError(f"unknown microphone mode {mode!r}; use one of {', '.join(MIC_MODES)}")
        if mode != self.mode and self.gate.open:
            self._close_turn_soon()
        self.mode = mode

    def _close_turn_soon(self) -> None:
        self.gate = TurnGate()
        asyncio.ensure_future(self._end_turn())

    async def _end_turn(self) -> None:
        try:
            await self.stream.push_speech(np.zeros(0, np.int16), 48000, end_of_turn=True)
        except PipelineError:
            pass

    async def run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            samples = to_mono_int16(frame)
            rate = int(frame.sample_rate)
            ms = samples.size * 1000.0 / rate
            self.received_ms += ms
            self.level_dbfs = level_dbfs(samples)
            try:
                await self._route(samples, rate, ms)
            except PipelineError as exc:  # the stream ended or refused input: stop listening
                log.debug("microphone input stopped: %s", exc.message)
                return

    async def _route(self, samples: np.ndarray, rate: int, ms: float) -> None:
        if self.mode == "listen":
            await self.stream.push_listen(samples, rate)
            self.listen_ms += ms
        elif self.mode == "puppet":
            chunks, end = self.gate.feed(samples, rate)
            for i, chunk in enumerate(chunks):
                last = end and i == len(chunks) - 1
                await self.stream.push_speech(chunk, rate, end_of_turn=last)
                self.speech_ms += chunk.size * 1000.0 / rate
            if end:
                self.turns += 1
