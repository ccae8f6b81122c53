"""Choosing the clip mouth for each frame: the shape speech asks for, with continuity.

Unit selection as in concatenative speech synthesis: each library entry has a target
cost (how far its shape is from the wanted one, in units of the clip's own range) and a
join cost from the previous choice (nothing to play the next clip frame, a little to
hold, more to cut to an unrelated frame, growing with the shape difference the cut
shows). The look-ahead the engine reads (a fraction of a frame) leaves nothing to search
beyond the next frame, so the choice is greedy; a hysteresis keeps the running sequence
when a rival is barely better, so near-equal candidates never make the mouth flicker.
"""

from __future__ import annotations

import numpy as np

from avatar_node.engines.portrait.mouth_library import DARK, OPENING, TEETH, WIDTH, MouthLibrary

#: Weights of opening (the lip gap, and how dark the mouth looks), width and teeth in the shape cost.
_WEIGHTS = np.array([0.6, 0.6, 0.12, 0.06])
#: Join costs: cutting to a new stretch, holding the same frame, and per unit of shape jump.
CUT_COST = 0.03
HOLD_COST = 0.01
CUT_SHAPE_COST = 0.3
#: The running sequence is kept unless a rival is better by this much.
KEEP_MARGIN = 0.012
#: A small preference for the base frame's own mouth: no seam at all where it fits.
OWN_BONUS = 0.006


class MouthSelector:
    """One stream's choice of mouths. Not thread-safe."""

    def __init__(self, library: MouthLibrary) -> None:
        self._lib = library
        d = library.descriptors.astype(np.float64)
        cols = [OPENING, DARK, WIDTH, TEETH]
        lo, mid, hi = np.percentile(d[:, cols], [5, 50, 95], axis=0)
        self._closed, self._open = lo[:2], np.maximum(hi[:2], lo[:2] + 1e-3)
        self.width_range = (float(lo[2]), float(mid[2]), float(hi[2]))
        span = np.maximum(hi - lo, 1e-3)
        span[3] = 1.0  # teeth is a share already
        self._span = span
        self._centre = np.array([0.0, 0.0, mid[2], 0.0])
        self._features = (d[:, cols] - self._centre) / span
        self._prev = -1

    def reset(self) -> None:
        self._prev = -1

    def features(self, opening: float, width: float, teeth: float) -> np.ndarray:
        """A wanted shape -> selection features. `opening` 0..1 (closed..the clip's wide open),
        `width` -1..1 (rounded..spread), `teeth` 0..1."""
        lo, mid, hi = self.width_range
        w = mid + width * ((hi - mid) if width > 0 else (mid - lo))
        op = self._closed + opening * (self._open - self._closed)
        return (np.array([op[0], op[1], w, teeth]) - self._centre) / self._span

    def opening_of(self, features: np.ndarray) -> float:
        """The inner opening (F units) a feature vector stands for."""
        return float(features[0] * self._span[0])

    def cost(self, target: np.ndarray) -> np.ndarray:
        """Target cost of every entry."""
        return np.square(self._features - target) @ _WEIGHTS

    def choose(self, target: np.ndarray, own: int = -1) -> int:
        cost = self.cost(target)
        prev = self._prev
        succ = -1
        if prev >= 0:
            jump = np.square(self._features - self._features[prev]) @ _WEIGHTS
            cost = cost + CUT_COST + CUT_SHAPE_COST * jump
            cost[prev] -= CUT_COST - HOLD_COST
            succ = int(self._lib.successor[prev])
            if succ >= 0:
                cost[succ] -= CUT_COST + CUT_SHAPE_COST * jump[succ]
        if own >= 0:
            cost[own] -= OWN_BONUS
        best = int(np.argmin(cost))
        if succ >= 0 and cost[succ] <= cost[best] + KEEP_MARGIN:
            best = succ
        self._prev = best
        return best
