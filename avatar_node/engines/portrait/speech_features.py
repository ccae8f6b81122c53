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
    "low": (_FREQS >= 80) & (_FREQS < 350),  # voicing and the nasal murmur
    "f1": (_FREQS >= 250) & (_FREQS < 1100),  # first formant range
    "f2": (_FREQS >= 900) & (_FREQS < 3000),  # second formant range
    "fric": (_FREQS >= 3500) & (_FREQS < 7800),  # frication
}
_WINDOW = np.hanning(_FFT).astype(np.float32)


@dataclass(frozen=True)
class MouthShape:
    """Targets for the mouth: all in 0..1 except `width` (-1 rounded .. +1 spread)."""

    open: float = 0.0
    width: float = 0.0
    teeth: float = 0.0  # how much of the upper teeth shows
    lip_close: float = 0.0  # lips pressed (m, b, p)
    lip_bite: float = 0.0  # lower lip under the upper teeth (f, v)
    lower_teeth: float = 0.0  # how much of the lower teeth shows

    FIELDS = ("open", "width", "teeth", "lip_close", "lip_bite", "lower_teeth")

    def as_tuple(self) -> tuple[float, float, float, float, float, float]:
        return (self.open, self.width, self.teeth, self.lip_close, self.lip_bite, self.lower_teeth)


def clamp(x: float, lo: float, hi: float) -> float:
    """A scalar limited to [lo, hi] (np.clip costs microseconds per call on scalars)."""
    return lo if x < lo else hi if x > hi else float(x)


def level_db(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20.0 * np.log10(rms + 1e-6)


class SpeechAnalyser:
    """Per-frame mouth targets from the speech window; keeps the level normaliser's state.

    Shape from the spectrum: the first formant's centre (energy-weighted frequency in
    250-1100 Hz) says how open the vowel is; the second's (900-3000 Hz) whether the lips
    spread (high, i/e) or round (low, u/o/w); frication (energy above 3.5 kHz with many
    zero crossings) brings the teeth together; a murmur with most energy below 350 Hz
    and little in the second formant's range (m, n) closes the lips. The thresholds were
    set from per-phoneme averages of synthesised speech (two voices) and checked on
    voices they were not set on (benchmarks/portrait_sync.py).
    """

    #: Below this level (dBFS) speech counts as silence, whatever the normaliser says.
    SILENCE_DB = -50.0
    #: The mouth opens over this many dB above the gate.
    RANGE_DB = 28.0

    def __init__(self) -> None:
        self._peak_db = -20.0

    def reset(self) -> None:
        self._peak_db = -20.0

    def analyse(self, window: np.ndarray, dt: float = 0.04) -> MouthShape:
        db = level_db(window)
        # Peak follower: rises at once, falls ~6 dB per second.
        self._peak_db = max(db, self._peak_db - 6.0 * dt, -35.0)
        gate = max(self.SILENCE_DB, self._peak_db - self.RANGE_DB)
        level = clamp((db - gate) / max(self._peak_db - gate, 1.0), 0.0, 1.0)
        if level <= 0.0 or len(window) < 64:
            return MouthShape()

        frame = window[-_FFT:] if len(window) >= _FFT else np.pad(window, (0, _FFT - len(window)))
        power = np.abs(np.fft.rfft(frame * _WINDOW[: len(frame)])) ** 2 + 1e-12
        bands = {name: float(power[sel].sum()) for name, sel in _BANDS.items()}
        total = float(power[(_FREQS >= 80) & (_FREQS < 7800)].sum())
        f1c = float((power[_BANDS["f1"]] * _FREQS[_BANDS["f1"]]).sum() / bands["f1"])
        f2c = float((power[_BANDS["f2"]] * _FREQS[_BANDS["f2"]]).sum() / bands["f2"])
        fric = bands["fric"] / total
        crossings = float(np.mean(np.abs(np.diff(np.signbit(window).astype(np.int8)))))
        noisy = float(clamp((fric - 0.2) / 0.35, 0, 1) * clamp((crossings - 0.1) / 0.2, 0, 1))
        f2_share = bands["f2"] / total
        murmur = float(
            clamp((bands["low"] / total - 0.6) / 0.15, 0, 1) * clamp((0.16 - f2_share) / 0.08, 0, 1)
        ) * (1.0 - noisy)

        vowel_open = 0.45 + 0.7 * clamp((f1c - 320.0) / 420.0, 0, 1)
        openness = level**0.8 * min(vowel_open, 1.0) * (1.0 - 0.7 * noisy) * (1.0 - 0.8 * murmur)
        spread = clamp((f2c - 2000.0) / 400.0, 0, 1)
        # Rounded: close (u, w: low F1, F2 not high) or open-mid (o: mid F1, low F2).
        close_round = clamp((1950.0 - f2c) / 450.0, 0, 1) * clamp((470.0 - f1c) / 120.0, 0, 1)
        open_round = (
            clamp((1500.0 - f2c) / 300.0, 0, 1) * clamp((720.0 - f1c) / 150.0, 0, 1)
            * clamp((f1c - 420.0) / 100.0, 0, 1)
        )
        rounded = float(max(close_round, open_round)) * (1.0 - noisy) * (1.0 - murmur)
        width = clamp(spread - rounded + 0.45 * noisy, -1, 1)
        teeth = clamp(0.3 + 0.7 * noisy + 0.35 * spread - 0.3 * rounded, 0, 1)
        lower = clamp(0.9 * noisy + 0.4 * (openness - 0.6) / 0.4, 0, 1)
        return MouthShape(
            open=float(openness), width=width, teeth=teeth, lip_close=0.8 * murmur, lower_teeth=lower
        )
