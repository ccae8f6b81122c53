"""The session's one media clock.

The timeline is the output speech audio's sample clock: a pts is a count of samples
at `clock_rate`. Frame k starts at round(k * clock_rate / fps). Every position is
computed from the frame index, never accumulated, so nothing drifts over hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class MediaClock:
    fps: Fraction
    clock_rate: int

    @classmethod
    def create(cls, fps: float, clock_rate: int) -> MediaClock:
        # 29.97 and friends arrive as floats; keep them exact as 30000/1001.
        return cls(Fraction(fps).limit_denominator(1001), clock_rate)

    def pts(self, frame_index: int) -> int:
        """Start of frame k in clock ticks."""
        return self.samples_at(frame_index, self.clock_rate)

    def frame_ticks(self, frame_index: int) -> int:
        """Length of frame k in ticks (varies by one when clock_rate/fps is not whole)."""
        return self.pts(frame_index + 1) - self.pts(frame_index)

    def seconds(self, frame_index: int) -> float:
        return frame_index * self.fps.denominator / self.fps.numerator

    def samples_at(self, frame_index: int, rate: int) -> int:
        """Start of frame k counted in samples of another rate (e.g. the engine's 16 kHz):
        round(k * rate / fps), in integers (this runs for every frame), halves to even."""
        quotient, remainder = divmod(frame_index * rate * self.fps.denominator, self.fps.numerator)
        twice = 2 * remainder
        if twice > self.fps.numerator or (twice == self.fps.numerator and quotient % 2):
            quotient += 1
        return quotient

    @property
    def frame_seconds(self) -> float:
        return self.fps.denominator / self.fps.numerator
