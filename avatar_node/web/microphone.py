"""The browser's microphone, received on the peer connection, routed into the avatar stream.

Two uses, switched from the page at any time:
- `listen`: the user's voice goes to `push_listen`, so the avatar shows it is listening;
- `puppet`: the user's voice is the avatar's speech (`push_speech`, streamed at 1x as it
  arrives). The voice gate every edge shares (avatar_client.voice_gate) opens a turn on
  speech and closes it after a pause, so the avatar returns to its idle look between sentences.
`off` drops what arrives (the page also stops sending).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from avatar_client.voice_gate import SILENCE_DBFS, VoiceGate, level_dbfs

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


class MicrophoneRouter:
    """Reads the remote audio track until it ends or the task is cancelled."""

    def __init__(self, stream: AvatarStream, mode: MicMode = "listen") -> None:
        self.stream = stream
        self.mode: MicMode = mode
        self.gate = VoiceGate()
        self.received_ms = 0.0  # everything that arrived
        self.listen_ms = 0.0  # pushed as listen audio
        self.speech_ms = 0.0  # pushed as speech (puppet)
        self.turns = 0
        self.level_dbfs = SILENCE_DBFS

    def set_mode(self, mode: MicMode) -> None:
        if mode not in MIC_MODES:
            raise ValueError(f"unknown microphone mode {mode!r}; use one of {', '.join(MIC_MODES)}")
        if mode != self.mode and self.gate.open:
            self._close_turn_soon()
        self.mode = mode

    def _close_turn_soon(self) -> None:
        self.gate.reset()
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
            step = self.gate.feed(samples, rate)
            for i, chunk in enumerate(step.chunks):
                last = step.closes and i == len(step.chunks) - 1
                await self.stream.push_speech(chunk, rate, end_of_turn=last)
                self.speech_ms += chunk.size * 1000.0 / rate
            if step.closes:
                self.turns += 1
