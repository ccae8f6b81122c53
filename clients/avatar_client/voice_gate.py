"""The one voice gate: where a live microphone's speech turns begin and end.

Every edge that lets a microphone drive the avatar (the web page's puppet mode, `avatar cam
--puppet`, `avatar obs`'s microphone, the LiveKit room bot) cuts the voice into turns with
this, so a sentence starts and ends the same way everywhere:

- a chunk whose RMS reaches `threshold_dbfs` (full scale = 0 dBFS) opens a turn;
- the turn starts with the `preroll_s` heard before that chunk, never less: a word's onset is
  quieter than its vowel, so the chunk that crosses the threshold is already late;
- `hang_s` of quiet closes it (the pauses inside a sentence are shorter).

Pure numpy; chunks may be int16 or float (full scale 1.0), of any size, each at its own
sample rate. The gate only decides; sending is the caller's.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_THRESHOLD_DBFS = -45.0
DEFAULT_HANG_S = 0.6
DEFAULT_PREROLL_S = 0.3
SILENCE_DBFS = -120.0
#: The command-line flag every microphone-driven command uses for the threshold.
THRESHOLD_FLAG = "--voice-threshold-db"


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS: int16 against 32768, floats against 1.0; -120 for silence or nothing."""
    if samples.size == 0:
        return SILENCE_DBFS
    x = samples.astype(np.float64)
    if samples.dtype == np.int16:
        x /= 32768.0
    rms = math.sqrt(float(np.mean(x * x)))
    return 20.0 * math.log10(max(rms, 10 ** (SILENCE_DBFS / 20)))


@dataclass
class GateStep:
    """What to do with the audio after one chunk."""

    #: Audio to send now, oldest first: at an opening the pre-roll and the chunk, then the chunk.
    chunks: list[np.ndarray] = field(default_factory=list)
    #: These chunks start a turn.
    opens: bool = False
    #: The turn ends after these chunks.
    closes: bool = False
    #: At an opening, the `at` given with the first chunk sent (when it was heard).
    heard_at: Any = None


class VoiceGate:
    def __init__(
        self,
        threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
        hang_s: float = DEFAULT_HANG_S,
        preroll_s: float = DEFAULT_PREROLL_S,
    ) -> None:
        if hang_s < 0 or preroll_s < 0:
            raise ValueError("hang_s and preroll_s must be >= 0")
        self.threshold_dbfs = threshold_dbfs
        self.hang_s = hang_s
        self.preroll_s = preroll_s
        self.open = False
        self._quiet_s = 0.0
        self._held: collections.deque[tuple[np.ndarray, float, Any]] = collections.deque()  # (chunk, seconds, at)
        self._held_s = 0.0

    def feed(self, chunk: np.ndarray, rate: int, at: Any = None) -> GateStep:
        seconds = chunk.size / rate
        loud = level_dbfs(chunk) >= self.threshold_dbfs
        if self.open:
            self._quiet_s = 0.0 if loud else self._quiet_s + seconds
            if self._quiet_s >= self.hang_s:
                self.open = False
                return GateStep([chunk], closes=True)
            return GateStep([chunk])
        if not loud:
            self._hold(chunk, seconds, at)
            return GateStep()
        held = list(self._held)
        self._held.clear()
        self._held_s = 0.0
        self.open, self._quiet_s = True, 0.0
        first_at = held[0][2] if held else at
        return GateStep([c for c, _, _ in held] + [chunk], opens=True, heard_at=first_at)

    def _hold(self, chunk: np.ndarray, seconds: float, at: Any) -> None:
        self._held.append((chunk, seconds, at))
        self._held_s += seconds
        # Drop the oldest only while what stays still covers the pre-roll.
        while self._held and self._held_s - self._held[0][1] >= self.preroll_s:
            self._held_s -= self._held.popleft()[1]

    def reset(self) -> None:
        """Forget everything: the turn (if open) is over and the pre-roll is gone."""
        self.open = False
        self._quiet_s = 0.0
        self._held.clear()
        self._held_s = 0.0
