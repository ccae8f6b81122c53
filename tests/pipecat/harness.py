"""A real Pipecat pipeline around the avatar service, a scripted TTS in front of it, and what it pushed.

    async with AvatarPipeline(AvatarVideoService(photo=photo, engine="testcard")) as run:
        await run.say(speech)                       # TTSStarted, TTSAudioRaw chunks, TTSStopped
        await run.until(lambda: run.finished_turns() >= 1)
        await run.end()                             # EndFrame through the pipeline
    run.frames()                                    # the avatar's frames, in the order pushed
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from avatar_node.engines.testcard import bar_level

from ..support import media


@dataclass(frozen=True)
class Speech(media.Speech):
    def tts_frames(self, chunk_ms: int = 20, context_id: str = "ctx-1") -> list[Frame]:
        """As a Pipecat TTS service pushes it: started, small audio chunks, stopped."""
        step = self.rate * chunk_ms // 1000
        chunks: list[Frame] = [
            TTSAudioRawFrame(np.ascontiguousarray(self.samples[i : i + step]).tobytes(), self.rate, 1,
                             context_id=context_id)
            for i in range(0, len(self.samples), step)
        ]
        return [TTSStartedFrame(context_id=context_id), *chunks, TTSStoppedFrame(context_id=context_id)]


class Recorder(FrameProcessor):
    """Keeps every frame going one way, with when it came, and passes everything on."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self.direction = direction
        self.seen: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction and not isinstance(frame, StartFrame):
            self.seen.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


@dataclass
class PushedFrame:
    """One frame of the avatar's timeline as the service pushed it: its picture (if one was
    pushed) and the audio that followed it."""

    picture: np.ndarray | None
    audio: np.ndarray
    speech: bool  # pushed as TTS audio (the transport counts the bot as speaking)
    pts: int
    at: float  # when the audio was pushed (for the benchmarks only)
    position: int  # its place among all the frames pushed downstream


class AvatarPipeline:
    def __init__(self, avatar: Any, *, after: list[FrameProcessor] | None = None) -> None:
        self.avatar = avatar
        self.up = Recorder(FrameDirection.UPSTREAM)
        self.into = Recorder(FrameDirection.DOWNSTREAM)  # what reaches the avatar, and when
        self.down = Recorder(FrameDirection.DOWNSTREAM)
        self.worker = PipelineWorker(
            Pipeline([self.up, self.into, avatar, *(after or []), self.down]),
            params=PipelineParams(audio_out_sample_rate=48000),
            cancel_on_idle_timeout=False,
        )
        self.runner = WorkerRunner(handle_sigint=False)
        self.running: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AvatarPipeline:
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker: Any, frame: Any) -> None:
            started.set()

        await self.runner.add_workers(self.worker)
        self.running = asyncio.create_task(self.runner.run())
        async with asyncio.timeout(60):
            waiting = asyncio.ensure_future(started.wait())
            await asyncio.wait({waiting, self.running}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.running is not None and not self.running.done():
            await self.worker.cancel()
            async with asyncio.timeout(30):
                await self.running

    # ------------------------------------------------------------------ driving

    async def queue(self, *frames: Frame) -> None:
        await self.worker.queue_frames(list(frames))

    async def say(self, speech: Speech, context_id: str = "ctx-1") -> None:
        await self.queue(*speech.tts_frames(context_id=context_id))

    async def until(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)

    async def end(self) -> None:
        """EndFrame through the pipeline; returns when the run is over."""
        await self.queue(EndFrame())
        await self.finished()

    async def cancel(self) -> None:
        await self.worker.cancel()
        await self.finished()

    async def finished(self, timeout: float = 60.0) -> None:
        assert self.running is not None
        async with asyncio.timeout(timeout):
            await self.running

    # ------------------------------------------------------------------ reading

    def downstream(self) -> list[Frame]:
        return [f for _, f in self.down.seen]

    def upstream(self) -> list[Frame]:
        return [f for _, f in self.up.seen]

    def position_of(self, kind: type) -> int:
        """Where the first frame of `kind` is among those pushed downstream."""
        return next(i for i, f in enumerate(self.downstream()) if isinstance(f, kind))

    def frames(self) -> list[PushedFrame]:
        out: list[PushedFrame] = []
        picture: np.ndarray | None = None
        for position, (at, frame) in enumerate(self.down.seen):
            if isinstance(frame, OutputImageRawFrame):
                width, height = frame.size
                picture = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
            elif isinstance(frame, OutputAudioRawFrame):
                audio = np.frombuffer(frame.audio, np.int16)
                out.append(PushedFrame(picture, audio, isinstance(frame, TTSAudioRawFrame), frame.pts, at, position))
                picture = None
        return out

    def speech_frames(self) -> int:
        return sum(f.speech for f in self.frames())

    def finished_turns(self) -> int:
        return sum(isinstance(f, TTSStoppedFrame) for f in self.downstream())


def levels(frames: list[PushedFrame]) -> np.ndarray:
    """The test card's level bar (its mouth) in each pushed picture; NaN where none was pushed."""
    return np.array([bar_level(f.picture) if f.picture is not None else np.nan for f in frames])


def envelope(frames: list[PushedFrame]) -> np.ndarray:
    """RMS of each frame's pushed audio."""
    return np.array([float(np.sqrt(np.mean((f.audio.astype(np.float32) / 32768) ** 2))) if len(f.audio) else 0.0
                     for f in frames])


def best_lag(a: np.ndarray, b: np.ndarray, most: int = 4) -> tuple[int, float]:
    """The shift of `a` against `b` (in frames) that correlates best, and that correlation."""
    best = (0, -1.0)
    for lag in range(-most, most + 1):
        x = a[max(0, lag) : len(a) + min(0, lag)]
        y = b[max(0, -lag) : len(b) + min(0, -lag)]
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        keep = ~(np.isnan(x) | np.isnan(y))
        if keep.sum() < 10 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
            continue
        c = float(np.corrcoef(x[keep], y[keep])[0, 1])
        if c > best[1]:
            best = (lag, c)
    return best


class Playout(BaseOutputTransport):
    """An output transport whose device is a log: Pipecat's own output machinery (its audio queue,
    pictures synced with audio, bot-speaking frames, interruption handling) in front of a sound
    card that takes each chunk's own duration to play, and a screen."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        super().__init__(TransportParams(
            audio_out_enabled=True, audio_out_sample_rate=48000, video_out_enabled=True,
            video_out_width=width, video_out_height=height, video_out_framerate=fps,
        ))
        #: In the order it happened: ("audio", int16 samples), ("video", RGB picture), ("interruption", None).
        self.log: list[tuple[str, Any]] = []
        self._next_at = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self.log.append(("interruption", None))
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self.log.append(("audio", np.frombuffer(frame.audio, np.int16)))
        now = time.monotonic()
        self._next_at = max(self._next_at, now)
        await asyncio.sleep(self._next_at - now)
        self._next_at += len(frame.audio) / 2 / frame.sample_rate
        return True

    async def write_video_frame(self, frame: OutputImageRawFrame) -> bool:
        width, height = frame.size
        self.log.append(("video", np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)))
        return True
