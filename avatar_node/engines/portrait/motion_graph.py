"""The base motion: a graph over the clip's frames, and a walk on it that never loops.

Playing the clip forward is always right; at the end of a usable stretch, or when a
stretch has played long enough, the walk cuts to another frame that looks like the frame
it would have shown next (head pose and the whole picture, measured against the clip's
own frame-to-frame change). Never backwards (no
ping-pong), never to a nearby frame (no stutter); a cut within the clip's usual
frame-to-frame change is plain, a larger one (only where a stretch ends with nothing
better) cross-fades. The same cut is never taken twice
within NO_REPEAT_S and stretches stay under 2 s, so no 2 s of output repeats within
NO_REPEAT_S however short the clip. Idle prefers calm
stretches with the mouth closed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

#: Frames a costly cut cross-fades over: at least CROSSFADE, more the larger its change
#: (a cross-fade of two poses shows both, so no longer than it must).
CROSSFADE = 3
MAX_CROSSFADE = 10
#: Stretches between cuts last up to this long: under 2 s, so that with no cut repeated
#: within NO_REPEAT_S no 2 s of output can come back (each holds a cut, in its place).
LONGEST_STRETCH_S = 1.8
#: A cut whose change is within the clip's usual (90th percentile) frame-to-frame change,
#: times this, is a plain cut: it looks like any other frame step.
CUT_TOLERANCE = 0.7
#: Cuts land at least this far (frames) from where they leave.
MIN_HOP = 12
#: No cut is taken twice within this many seconds.
NO_REPEAT_S = 20.0
#: Steps of the clip above this percentile of its own are cut, not played (the top 1 % would
#: do; thumbnails rank steps a little differently from the full picture, hence the margin).
JERK_PERCENTILE = 95
#: Frames before a stretch's end from which a quiet moment to cut is looked for (the
#: frames before a stretch breaks off are often the fast ones that broke it).
NEAR_END = 12
#: Cuts are taken where the clip's own change is at most this (1 = its usual change).
QUIET = 0.7
#: Each frame keeps at least this many ways out (the best ones, if few pass the tolerance).
MIN_EXITS = 6
_THUMB = (64, 36)


@dataclass(frozen=True, eq=False)
class MotionGraph:
    """Cuts between base frames (indices into the clip avatar's base frames); read-only."""

    successor: np.ndarray  # (N,) next base frame in the clip, -1 at a stretch's end
    exits: tuple[np.ndarray, ...]  # per frame: base frames a cut may land on (after this one)
    exit_cost: tuple[np.ndarray, ...]  # per frame: each cut's cost, 1 = the clip's usual change
    calm: np.ndarray  # (N,) 0..1: how well a frame suits idle (still head, closed mouth)
    #: A cut no worse than this is taken when a stretch has played long enough; a worse one
    #: waits for a better frame to leave from (the median frame's best way out).
    good_cut: float
    #: (N,) the clip's own change from each frame to its successor (1 = its usual change):
    #: a cut's cross-fade adds to it, so cuts wait for a quiet moment.
    motion: np.ndarray

    def __len__(self) -> int:
        return len(self.successor)


def build_graph(
    thumbs: np.ndarray, pose: np.ndarray, successor: np.ndarray, calm: np.ndarray
) -> MotionGraph:
    """`thumbs` (N, D) grey thumbnails, `pose` (N, P) stable landmarks in face units."""
    n = len(thumbs)
    t = thumbs.astype(np.float64)
    sq = (t * t).sum(1)
    picture = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * t @ t.T, 0.0) / t.shape[1])
    p = pose.astype(np.float64)
    psq = (p * p).sum(1)
    head = np.sqrt(np.maximum(psq[:, None] + psq[None, :] - 2 * p @ p.T, 0.0) / p.shape[1])
    linked = np.nonzero(successor >= 0)[0]
    if len(linked):
        usual_pic = float(np.percentile(picture[linked, successor[linked]], 90)) + 1e-3
        usual_head = float(np.percentile(head[linked, successor[linked]], 90)) + 1e-4
    else:
        usual_pic, usual_head = 1.0, 0.01
    change = np.maximum(picture / usual_pic, head / usual_head)
    if len(linked) >= 20:
        # The clip's rarest, largest steps (a jerk of the head or the camera) are not played
        # again and again in idle: they become cuts like any other.
        # Judged by the mean absolute change, as the eye (and a frame difference) sees it.
        steps = np.abs(t[linked] - t[successor[linked]]).mean(1)
        successor = successor.copy()
        successor[linked[steps > np.percentile(steps, JERK_PERCENTILE)]] = -1
    hop = max(2, min(MIN_HOP, n // 6))
    exits, costs = [], []
    short = _too_short(successor)
    for i in range(n):
        # A cut after frame i shows j where i's successor would have been.
        nxt = successor[i] if successor[i] >= 0 else i
        row = change[nxt].copy()
        near = np.abs(np.arange(n) - i) < hop
        row[near] = np.inf
        row[short] = np.inf  # land where a cross-fade can play out
        order = np.argsort(row)
        keep = [j for j in order if row[j] <= CUT_TOLERANCE and np.isfinite(row[j])]
        if len(keep) < MIN_EXITS:
            keep = [j for j in order[:MIN_EXITS] if np.isfinite(row[j])]
        exits.append(np.asarray(keep, np.int64))
        costs.append(row[keep].astype(np.float32))
    best = [float(c[0]) for c in costs if len(c)]
    good = max(float(np.median(best)) if best else CUT_TOLERANCE, CUT_TOLERANCE)
    motion = np.array([change[i, s] if s >= 0 else 0.0 for i, s in enumerate(successor)], np.float32)
    return MotionGraph(
        successor.astype(np.int64), tuple(exits), tuple(costs), calm.astype(np.float32), good, motion
    )


def _too_short(successor: np.ndarray) -> np.ndarray:
    """Frames too near their stretch's end to land on: the longest cross-fade must play out
    (and a little more) before another cut is forced."""
    n = len(successor)
    left = np.zeros(n, np.int64)
    for i in range(n - 1, -1, -1):
        left[i] = left[successor[i]] + 1 if successor[i] >= 0 else 0
    return left < MAX_CROSSFADE + NEAR_END


def _left_in_stretch(graph: MotionGraph, index: int, horizon: int = 3) -> int:
    left = 0
    while left < horizon and graph.successor[index] >= 0:
        index = int(graph.successor[index])
        left += 1
    return left


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


@dataclass(frozen=True)
class BaseFrame:
    """What to show: base frame `index`, cross-faded with `fade_from` at weight `fade` (0..1)."""

    index: int
    fade_from: int = -1
    fade: float = 0.0


class GraphWalker:
    """One session's walk on the graph; seeded, so a stream is reproducible."""

    def __init__(self, graph: MotionGraph, rng: np.random.Generator, fps: float) -> None:
        self._g = graph
        self._rng = rng
        self._fps = fps
        n = len(graph)
        self._longest = LONGEST_STRETCH_S
        self._recent: deque[tuple[float, int, int]] = deque()
        self._last_played = np.full(n, -1e9)
        self._now = 0.0
        self._cur = int(rng.integers(n))
        self._left = self._stretch()
        self._old = -1  # the stretch a cross-fade leaves
        self._old_moves = True
        self._fade_left = 0
        self._fade_len = CROSSFADE
        self._since_cut = 0

    def _stretch(self) -> int:
        return int(self._rng.uniform(0.35, 1.0) * self._longest * self._fps)

    def step(self, calm: float) -> BaseFrame:
        """The next frame; `calm` (0..1) is how much idle wants still, mouth-closed stretches."""
        self._now += 1.0 / self._fps
        g = self._g
        self._left -= 1
        self._since_cut += 1
        nxt = int(g.successor[self._cur])
        if self._left <= 0 or _left_in_stretch(g, self._cur, NEAR_END) < NEAR_END:
            cut = self._cut(calm)
            if cut is not None:
                target, cost = cut
                # The stretch left fades out moving on, or held where its own motion is
                # large (so the fade does not add to a big step).
                self._old_moves = nxt >= 0 and g.motion[self._cur] <= QUIET
                self._old = nxt if self._old_moves else self._cur
                self._fade_len = int(np.clip(np.ceil(1.5 * cost), CROSSFADE, MAX_CROSSFADE))
                self._fade_left = self._fade_len if cost > CUT_TOLERANCE else 0
                self._cur = target
                self._since_cut = 0
                self._left = self._stretch()
                return self._emit()
        if nxt >= 0:
            self._cur = nxt
        if self._old >= 0 and self._old_moves and g.successor[self._old] >= 0:
            self._old = int(g.successor[self._old])
        return self._emit()

    def _emit(self) -> BaseFrame:
        self._last_played[self._cur] = self._now
        if self._fade_left > 0 and self._old >= 0:
            fade = self._fade_left / (self._fade_len + 1)
            self._fade_left -= 1
            return BaseFrame(self._cur, self._old, fade)
        self._old = -1
        return BaseFrame(self._cur)

    def _cut(self, calm: float) -> tuple[int, float] | None:
        g = self._g
        exits, cost = g.exits[self._cur], g.exit_cost[self._cur].astype(np.float64)
        if not len(exits):
            return None
        while self._recent and self._recent[0][0] < self._now - NO_REPEAT_S:
            self._recent.popleft()
        used = {(a, b) for _, a, b in self._recent}
        weight = np.exp(-cost)
        weight *= np.array([0.0 if (self._cur, int(j)) in used else 1.0 for j in exits])
        # Prefer what has not been seen lately, and calm stretches when idle.
        age = self._now - self._last_played[exits]
        weight *= np.clip(age / NO_REPEAT_S, 0.05, 1.0)
        weight *= (1.0 - calm) + calm * (0.15 + g.calm[exits])
        ending = _left_in_stretch(g, self._cur) <= 2
        if self._fade_left > 0 and not ending:
            return None  # one cross-fade at a time
        fresh = weight > 0
        overdue = self._since_cut >= 2 * self._fps - 2  # past this, any fresh cut will do
        busy = g.motion[self._cur] > QUIET
        if not ending and (not fresh.any() or (cost[fresh].min() > g.good_cut or busy) and not overdue):
            return None  # keep playing; look again at the next frame
        if weight.sum() <= 0:
            weight = np.exp(-cost)  # nothing fresh: reuse the best cut rather than freeze
        k = int(self._rng.choice(len(exits), p=weight / weight.sum()))
        j = int(exits[k])
        self._recent.append((self._now, self._cur, j))
        return j, float(cost[k])
