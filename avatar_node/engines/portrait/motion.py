"""Life: smoothing springs, blinks, head motion, gaze and the listening posture.

Everything random draws from one generator seeded by the stream's seed, so a stream is
reproducible frame for frame. Nothing here loops: head motion and gaze are filtered
noise (Ornstein-Uhlenbeck processes), blinks come at gamma-distributed intervals.
"""

from __future__ import annotations

import math

import numpy as np


class Spring:
    """Critically damped springs toward a target (one per channel): smooth, no overshoot.

    Each step is the exact solution of x'' = w^2 (target - x) - 2 w x' over `dt` with the
    target held, so it is stable for any frame interval (a 10 fps stream, or a step that
    covers frames skipped to keep a live session on time).
    """

    def __init__(self, size: int, omega: float | np.ndarray) -> None:
        self.value = np.zeros(size)
        self.velocity = np.zeros(size)
        self.omega = np.broadcast_to(np.asarray(omega, dtype=np.float64), (size,)).copy()
        self._hurry: tuple[float, int] = (0.0, 0)  # (omega, steps left)

    def hurry(self, omega: float, steps: int) -> None:
        """Stop moving and follow the next `steps` targets at `omega` at least: what was under
        way is dropped, so the value heads straight for the new target (a mouth that is
        interrupted shuts at once instead of finishing the syllable it was opening for)."""
        self.velocity[:] = 0.0
        self._hurry = (omega, steps)

    def step(self, target: np.ndarray, dt: float) -> np.ndarray:
        w = self.omega
        omega, steps = self._hurry
        if steps > 0:
            w = np.maximum(w, omega)
            self._hurry = (omega, steps - 1)
        offset = self.value - target
        slope = self.velocity + w * offset
        decay = np.exp(-w * dt)
        self.value = target + (offset + slope * dt) * decay
        self.velocity = (slope - w * (offset + slope * dt)) * decay
        return self.value

    def reset(self) -> None:
        self.value[:] = 0.0
        self.velocity[:] = 0.0


class OrnsteinUhlenbeck:
    """Mean-reverting noise with a given standard deviation and time constant."""

    def __init__(self, rng: np.random.Generator, size: int, sigma: np.ndarray, tau_s: np.ndarray) -> None:
        self._rng = rng
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.tau = np.asarray(tau_s, dtype=np.float64)
        self.value = rng.normal(0.0, 1.0, size) * self.sigma

    def step(self, dt: float, scale: float = 1.0) -> np.ndarray:
        a = np.exp(-dt / self.tau)
        noise = self._rng.normal(0.0, 1.0, len(self.value))
        self.value = a * self.value + np.sqrt(1 - a * a) * self.sigma * scale * noise
        return self.value


class Blinker:
    """Blinks at natural, irregular intervals (mean ~3.5 s), sometimes doubled."""

    CLOSE_S, HOLD_S, OPEN_S = 0.08, 0.04, 0.16

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._next = float(rng.uniform(0.6, 2.5))
        self._start: float | None = None

    def trigger(self, t: float) -> None:
        if self._start is None:
            self._start = t

    def closure(self, t: float, rate: float = 1.0) -> float:
        """Eyelid closure 0..1 at time t; `rate` > 1 blinks more often (e.g. speaking)."""
        if self._start is None and t >= self._next:
            self._start = t
        if self._start is None:
            return 0.0
        phase = t - self._start
        total = self.CLOSE_S + self.HOLD_S + self.OPEN_S
        if phase >= total:
            self._start = None
            if self._rng.random() < 0.12:  # a double blink
                self._next = t + float(self._rng.uniform(0.12, 0.25))
            else:
                self._next = t + float(self._rng.gamma(4.0, 0.9)) / rate
            return 0.0
        if phase < self.CLOSE_S:
            return _ease(phase / self.CLOSE_S)
        if phase < self.CLOSE_S + self.HOLD_S:
            return 1.0
        return 1.0 - _ease((phase - self.CLOSE_S - self.HOLD_S) / self.OPEN_S)


def _ease(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


class Gesture:
    """A one-shot motion (nod, head shake, smile) with a smooth envelope."""

    def __init__(self, start: float, duration: float) -> None:
        self.start = start
        self.duration = duration

    def phase(self, t: float) -> float | None:
        p = (t - self.start) / self.duration
        return p if 0.0 <= p <= 1.0 else None


def nod_curve(p: float) -> float:
    """Chin down then back up, a little rebound: pitch in units of the nod depth."""
    return math.sin(math.pi * p) * (1.0 - 0.35 * p) - 0.15 * math.sin(2 * math.pi * p) * p


def shake_curve(p: float) -> float:
    return math.sin(3 * math.pi * p) * math.sin(math.pi * p)


def bump_curve(p: float) -> float:
    """Rise quickly, hold, fall: for a smile or raised brows."""
    return _ease(min(p / 0.2, 1.0)) * _ease(min((1.0 - p) / 0.3, 1.0))
