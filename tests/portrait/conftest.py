"""Shared fixtures for the portrait engine tests: the engine, the sample photo (closed
mouth, glasses, a detailed background), a photo with an open smile, speech, and a real
H.264 round trip for frames."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from avatar_node.engines.base import Identity, StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.drive import resample_to_speech_rate
from avatar_node.speech.tts import SpeechClip, SpeechSynthesizer

SAMPLE = Path(__file__).resolve().parents[2] / "avatar_node" / "assets" / "sample_portrait.jpg"
#: A 360x320 photo whose mouth is open in a smile, upper teeth showing (data/README.md).
SMILE = Path(__file__).resolve().parent / "data" / "open_smile.jpg"
OPTIONS = StreamOptions(width=848, height=480, fps=25.0, seed=7)


@pytest.fixture(scope="session")
def engine() -> PortraitEngine:
    return PortraitEngine()


@pytest.fixture(scope="session")
def sample_bytes() -> bytes:
    return SAMPLE.read_bytes()


@pytest.fixture(scope="session")
def sample_rgb(sample_bytes: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(sample_bytes)).convert("RGB"))


@pytest.fixture(scope="session")
def identity(engine: PortraitEngine, sample_bytes: bytes) -> Identity:
    return engine.prepare(sample_bytes)


@pytest.fixture(scope="session")
def smile_rgb() -> np.ndarray:
    return np.asarray(Image.open(SMILE).convert("RGB"))


@pytest.fixture(scope="session")
def smile_identity(engine: PortraitEngine) -> Identity:
    return engine.prepare(SMILE.read_bytes())


@pytest.fixture(scope="session")
def sentence() -> tuple[SpeechClip, np.ndarray]:
    """A real synthesised sentence and its samples at 16 kHz."""
    with SpeechSynthesizer() as tts:
        clip = tts.synthesize("Hello, my name is Pat. I am happy to meet you, and we can talk about the moon.")
    return clip, resample_to_speech_rate(clip.samples, clip.sample_rate)


@pytest.fixture(scope="session")
def vowels(tts_clip_factory):
    """A sentence with open, rounded and spread vowels and closed consonants."""
    return tts_clip_factory("Father saw a large car. Who knew you too, Sue? We see three bees. Mom, pop, bob.")


@pytest.fixture(scope="session")
def tts_clip_factory():
    """Synthesise a sentence once per text: (clip, samples at 16 kHz)."""
    cache: dict[str, tuple[SpeechClip, np.ndarray]] = {}
    with SpeechSynthesizer() as tts:

        def make(text: str) -> tuple[SpeechClip, np.ndarray]:
            if text not in cache:
                clip = tts.synthesize(text)
                cache[text] = (clip, resample_to_speech_rate(clip.samples, clip.sample_rate))
            return cache[text]

        yield make


def to_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def h264_round_trip(frames: list[np.ndarray], fps: int = 25) -> list[np.ndarray]:
    """Encode with libx264 (ultrafast, zerolatency) and decode back to RGB."""
    height, width = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    with av.open(buffer, "r") as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
