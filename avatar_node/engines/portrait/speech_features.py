"""Mouth shape from the sound of speech: level, and where its energy lies in the spectrum.

Loudness alone makes a wobble. The spectrum says more about the shape:
- open vowels (a) put strong energy around 600-1100 Hz (a high first formant);
- spread vowels (i, e) have a high second formant (2-3 kHz) over a low first one;
- rounded vowels (u, o, w) keep nearly everything below ~1 kHz;
- fricatives (s, sh, f) are noisy: energy above 3.5 kHz and many zero crossings, with a
  nearly closed mouth and the teeth showing.
The level is normalised by a slowly decaying peak, so quiet and loud voices both use the
whole range of the mouth, and gated so that room noise keeps it closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE

_FFT = 512
_FREQS = np.fft.rfftfreq(_FFT, 1.0 / SPEECH_SAMPLE_RATE)
_BANDS = {
    "f1_low": (_FREQS >= 150) & (_FREQS < 600),
    "f1_high": (_FREQS >= 600) & (_FREQS < 1200),
    "f2": (_FREQS >= 1500) & (_FREQS < 3200),
    "fric": (_FREQS >= 3500) & (_FREQS < 7800),
}
_WINDOW = np.hanning(_FFT).astype(np.float32)


@dataclass(frozen=True)
class MouthShape:
    """Targets for the mouth: all in 0..1 except `width` (-1 rounded .. +1 spread)."""

    open: float = 0.0
    width: float = 0.0
    teeth: float = 0.0
    lip_close: float = 0.0  # lips pressed (m, b, p)
    lip_bite: float = 0.0  # lower lip under the upper teeth (f, v)


def level_db(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20.0 * np.log10(rms + 1e-6)


class SpeechAnalyser:
    """Per-frame mouth targets from the speech window; keeps the level normaliser's state."""

    #: Below this level (dBFS) speech counts as silence, whatever the normaliser says.
    SILENCE_DB = -50.0
    #: The mouth opens over this many dB above the gate.
    RANGE_DB = 28.0

    def __init__(self) -> None:
        self._peak_db = -20.0

    def reset(self) -> None:
        self._peak_db = -20.0

    def analyse(self, window: np.ndarray) -> MouthShape:
        db = level_db(window)
        # Peak follower: rises at once, falls ~6 dB per second (at 25 frames/s).
        self._peak_db = max(db, self._peak_db - 0.25, -35.0)
        gate = max(self.SILENCE_DB, self._peak_db - self.RANGE_DB)
        level = float(np.clip((db - gate) / max(self._peak_db - gate, 1.0), 0.0, 1.0))
        if level <= 0.0 or len(window) < 64:
            return MouthShape()

        frame = window[-_FFT:] if len(window) >= _FFT else np.pad(window, (0, _FFT - len(window)))
        power = np.abs(np.fft.rfft(frame * _WINDOW[: len(frame)])) ** 2 + 1e-12
        bands = {name: float(power[sel].sum()) for name, sel in _BANDS.items()}
        total = sum(bands.values())
        f1_high = bands["f1_high"] / total
        f2 = bands["f2"] / total
        fric = bands["fric"] / total
        crossings = float(np.mean(np.abs(np.diff(np.signbit(window).astype(np.int8)))))
        noisy = float(np.clip((fric - 0.25) / 0.35, 0, 1) * np.clip((crossings - 0.12) / 0.2, 0, 1))

        vowel_open = 0.35 + 0.9 * f1_high  # 'a' opens more than 'i' or 'u' at equal loudness
        openness = level ** 0.8 * min(vowel_open, 1.0) * (1.0 - 0.75 * noisy)
        spread = np.clip((f2 - 0.12) / 0.25, 0, 1)
        rounded = np.clip((bands["f1_low"] / total - 0.55) / 0.3, 0, 1) * (1 - spread)
        width = float(np.clip(spread - rounded, -1, 1)) * (1 - noisy)
        teeth = float(np.clip(0.3 + 0.7 * noisy + 0.4 * spread, 0, 1))
        return MouthShape(open=float(openness), width=width, teeth=teeth)
