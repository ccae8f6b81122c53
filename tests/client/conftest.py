"""Shared fixtures: real H.264 packets and speech-like audio made here, on one clock."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import pytest

from avatar_client.events import AudioPacket, SessionReady, VideoPacket


@dataclass
class SyntheticSession:
    ready: SessionReady
    video: list[VideoPacket]
    audio: list[AudioPacket]
    colours: list[tuple[int, int, int]]  # the flat colour of each frame's top-left corner
    speech: np.ndarray  # int16 mono at clock_rate, all the audio packets together

    def interleaved(self) -> list[VideoPacket | AudioPacket]:
        """Per frame: audio then video, as a node may send them."""
        out: list[VideoPacket | AudioPacket] = []
        for video, audio in zip(self.video, self.audio):
            out += [audio, video]
        return out


def voiced_speech(seconds: float, rate: int, pitch_hz: float = 140.0) -> np.ndarray:
    """A vowel-like signal: harmonics of a pitch under a syllable-rate envelope (int16)."""
    t = np.arange(round(seconds * rate)) / rate
    harmonics = sum(np.sin(2 * np.pi * pitch_hz * h * t) / h for h in range(1, 8))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))  # ~4 syllables a second
    signal = harmonics * envelope
    return (signal / np.abs(signal).max() * 0.6 * 32767).astype(np.int16)


def encode_session(
    width: int = 320,
    height: int = 240,
    fps: float = 25.0,
    clock_rate: int = 48_000,
    frames: int = 30,
    keyframe_interval: int = 10,
) -> SyntheticSession:
    """Encode `frames` distinct pictures with libx264 the way the node does (Annex B,
    baseline, no B-frames, SPS/PPS before every keyframe) and slice speech to match."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, clock_rate)
    encoder.framerate = Fraction(fps).limit_denominator(1001)
    encoder.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "g": str(keyframe_interval),
    }
    colours = []
    raw = []
    for k in range(frames):
        colour = (20 + (k * 37) % 200, 200 - (k * 23) % 180, (k * 61) % 255)
        image = np.empty((height, width, 3), np.uint8)
        image[:] = colour
        image[height // 2 :, (k * 7) % width :] = 255 - np.array(colour, np.uint8)
        colours.append(colour)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = round(k * clock_rate / fps)
        raw += encoder.encode(frame)
    raw += encoder.encode(None)
    assert len(raw) == frames
    ticks = lambda k: round(k * clock_rate / fps)  # noqa: E731
    video = [
        VideoPacket(
            data=bytes(p),
            pts=ticks(k),
            duration=ticks(k + 1) - ticks(k),
            keyframe=p.is_keyframe,
            frame_index=k,
            speaking=k % 2 == 0,
            time_s=ticks(k) / clock_rate,
        )
        for k, p in enumerate(raw)
    ]
    speech = voiced_speech(ticks(frames) / clock_rate, clock_rate)
    audio = [
        AudioPacket(
            pcm=speech[ticks(k) : ticks(k + 1)].tobytes(),
            pts=ticks(k),
            sample_rate=clock_rate,
            time_s=ticks(k) / clock_rate,
        )
        for k in range(frames)
    ]
    ready = SessionReady(
        session_id="s",
        engine="test",
        avatar_id="a",
        width=width,
        height=height,
        fps=fps,
        bitrate_kbps=0,
        keyframe_interval=keyframe_interval,
        clock_rate=clock_rate,
        codec_config=b"",
        codec_string="avc1.42c01e",
        engine_lookahead_ms=0,
    )
    return SyntheticSession(ready, video, audio, colours, speech)


@pytest.fixture(scope="session")
def synthetic() -> SyntheticSession:
    return encode_session()
