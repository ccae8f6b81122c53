"""LiveKit integration fixtures: real rtc tracks, sources and synchronizer; linked fake rooms; real speech.

No LiveKit server can run here, so rooms are duck-typed (see fake_room.py); everything on
either side of them is the real thing. Without the `[livekit]` extra these tests skip,
except under CI (CI=true), where its absence is a failure.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np
import pytest

if os.environ.get("CI", "").lower() == "true":
    import livekit.agents  # noqa: F401  (CI installs the [livekit] extra: its absence is a failure there)
else:
    pytest.importorskip("livekit.agents", reason="the [livekit] extra is not installed (pip install -e '.[livekit]')")

from livekit import rtc  # noqa: E402

from avatar_node.engines.testcard import bar_level  # noqa: E402

from ..support import media  # noqa: E402
from ..support.media import LONG_SENTENCE, SHORT_SENTENCE, speech_clip  # noqa: E402

RATE = 48000


@dataclass(frozen=True)
class Speech(media.Speech):
    def frames(self, chunk_ms: int = 20, realtime: bool = False) -> AsyncIterator[rtc.AudioFrame]:
        """As a TTS plugin hands it to the agent: small frames, faster than real time (or at 1x,
        as a streaming TTS that only just keeps up)."""
        samples, rate = self.samples, self.rate
        step = rate * chunk_ms // 1000

        async def gen() -> AsyncIterator[rtc.AudioFrame]:
            for start in range(0, len(samples), step):
                part = np.ascontiguousarray(samples[start : start + step])
                yield rtc.AudioFrame(part.tobytes(), rate, 1, len(part))
                await asyncio.sleep(chunk_ms / 1000 if realtime else 0)

        return gen()


def _synthesize(text: str) -> Speech:
    return Speech(*speech_clip(text))


@pytest.fixture(scope="session")
def short_speech() -> Speech:
    """Real speech audio (espeak-ng), about two seconds."""
    return _synthesize(SHORT_SENTENCE)


@pytest.fixture(scope="session")
def long_speech() -> Speech:
    return _synthesize(LONG_SENTENCE)


@dataclass
class Readback:
    """What was published on a pair of local tracks, read back as a subscriber would get it."""

    video: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, RGB)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, int16 mono)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    streams: list[Any] = field(default_factory=list)

    def start(self, publications: list[Any]) -> None:
        for publication in publications:
            if publication.kind == rtc.TrackKind.KIND_VIDEO:
                stream = rtc.VideoStream(publication.track)
                self.tasks.append(asyncio.create_task(self._read_video(stream)))
            else:
                stream = rtc.AudioStream(publication.track, sample_rate=RATE, num_channels=1)
                self.tasks.append(asyncio.create_task(self._read_audio(stream)))
            self.streams.append(stream)

    async def _read_video(self, stream: Any) -> None:
        async for event in stream:
            frame = event.frame.convert(rtc.VideoBufferType.RGB24)
            image = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3).copy()
            self.video.append((time.monotonic(), image))

    async def _read_audio(self, stream: Any) -> None:
        async for event in stream:
            self.audio.append((time.monotonic(), np.frombuffer(event.frame.data, np.int16).copy()))

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for stream in self.streams:
            await stream.aclose()

    # ---------------------------------------------------------------- measurements

    def audio_samples(self) -> np.ndarray:
        return np.concatenate([a for _, a in self.audio]) if self.audio else np.zeros(0, np.int16)

    def video_fps(self, since: float = 0.0) -> float:
        """Frames per second read back, counted from `since` (monotonic) on."""
        times = [t for t, _ in self.video if t >= since]
        return (len(times) - 1) / (times[-1] - times[0])

    def audio_level_at(self, start: float, end: float) -> float:
        """RMS of the audio that arrived in [start, end)."""
        parts = [a for t, a in self.audio if start <= t < end]
        if not parts:
            return 0.0
        samples = np.concatenate(parts).astype(np.float32) / 32768
        return float(np.sqrt(np.mean(samples * samples)))

    def bar_levels(self) -> np.ndarray:
        return np.array([bar_level(image) for _, image in self.video])


def abrupt_gaps(audio: np.ndarray, min_samples: int = 48, loud: int = 2000, longest: int | None = None) -> int:
    """Runs of exact silence cut into loud speech (an audio source running dry mid-word), at least
    `min_samples` long (and at most `longest`), with loud audio on both sides. Speech itself fades
    out; a dropout does not."""
    silent = np.concatenate([[0], (audio == 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(silent))
    count = 0
    for start, end in zip(edges[::2], edges[1::2]):
        if end - start < min_samples or start < min_samples or end + min_samples > len(audio):
            continue
        if longest is not None and end - start > longest:
            continue
        before = np.abs(audio[start - min_samples : start].astype(np.int32)).max()
        after = np.abs(audio[end : end + min_samples].astype(np.int32)).max()
        if before > loud and after > loud:
            count += 1
    return count


def best_lag(video_series: np.ndarray, audio_series: np.ndarray, max_lag: int = 4) -> tuple[int, float]:
    """The shift (in frames) of the video against the audio that correlates best, and that correlation.
    A positive lag means the video comes late."""
    scores = {}
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            v, a = video_series[lag:], audio_series[: len(audio_series) - lag]
        else:
            v, a = video_series[:lag], audio_series[-lag:]
        if v.std() == 0 or a.std() == 0:
            scores[lag] = 0.0
            continue
        scores[lag] = float(np.corrcoef(v, a)[0, 1])
    lag = max(scores, key=lambda k: scores[k])
    return lag, scores[lag]


def audio_series_for_video(readback: Readback, period: float) -> np.ndarray:
    """For each video frame read back, the level of the audio that arrived during its period."""
    return np.array([readback.audio_level_at(t, t + period) for t, _ in readback.video])


def watch_audio_output(session: Any, finished: list[Any], clears: list[float]) -> None:
    """Record the agent's audio output: each playback_finished event, and when each clear_buffer came."""
    output = session.output.audio
    assert output is not None
    output.on("playback_finished", finished.append)
    clear = output.clear_buffer

    def spy_clear() -> None:
        clears.append(time.monotonic())
        clear()

    output.clear_buffer = spy_clear
