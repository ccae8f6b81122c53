"""Test media: the sample photo, a speech-like tone, real synthesised speech, WAV files."""

from __future__ import annotations

import wave
from dataclasses import dataclass
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


#: Sentences the edge tests speak: about two seconds, and long enough to interrupt mid-way.
SHORT_SENTENCE = "Hello there, this is your avatar speaking."
LONG_SENTENCE = ("This is a much longer sentence, so that there is plenty of time to interrupt it "
                 "somewhere in the middle, before the avatar has finished saying all of it.")


@dataclass(frozen=True)
class Speech:
    """Speech as a test hands it to a framework (each framework's tests add how it is sent)."""

    samples: np.ndarray  # int16 mono
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def speech_clip(text: str) -> tuple[np.ndarray, int]:
    """Real synthesised speech (espeak-ng, the node's own voice): int16 mono samples and their rate."""
    from avatar_node.speech.tts import SpeechSynthesizer

    with SpeechSynthesizer() as tts:
        clip = tts.synthesize(text)
    return np.asarray(clip.samples, np.int16), clip.sample_rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """int16 samples, shaped (n,) or (n, channels), as a 16-bit WAV file."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return Path(path)
