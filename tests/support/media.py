"""Test media: the sample photo, a speech-like tone, WAV files."""

from __future__ import annotations

import wave
from importlib import resources
from pathlib import Path

import numpy as np


def sample_photo() -> bytes:
    """The portrait that ships with the node."""
    return resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """A voiced-like signal: harmonics under a syllable-rate envelope (int16)."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    signal = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, 6))
    return (signal * envelope * amp * 32767 / 2).astype(np.int16)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """int16 samples, shaped (n,) or (n, channels), as a 16-bit WAV file."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return Path(path)
