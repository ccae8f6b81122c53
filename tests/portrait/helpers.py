"""Helpers for the portrait tests: drive a stream, find frames by phoneme, read pixels.

Where a test must know where to look (the iris, the lips), it asks the engine for the
geometry of that frame; what it asserts is always read from the frame's pixels or from
landmarks found again on the rendered frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar_node.engines.portrait.drive import frame_conditions
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box

from .conftest import OPTIONS

LOOKAHEAD = 60
#: espeak-ng mnemonics of open vowels.
OPEN_VOWELS = {"A:", "a:", "a", "aa", "A", "A@", "0", "O:", "aI", "aU"}


def luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def run(engine, identity, n, options=OPTIONS, indices=None, **drive):  # type: ignore[no-untyped-def]
    """Frames, and the lip contours the engine used for each, and the (closed) stream."""
    stream = engine.open(identity, options)
    frames, lips = [], []
    try:
        conds = list(frame_conditions(max(indices) + 1 if indices else n, options.fps, LOOKAHEAD, **drive))
        for cond in (conds[k] for k in indices) if indices else conds:
            frames.append(stream.step(cond)[0])
            lips.append(stream.lip_contours())
        return frames, lips, stream
    finally:
        stream.close()


def phoneme_frames(clip, symbols: set[str], n: int, fps: float = OPTIONS.fps) -> list[int]:  # type: ignore[no-untyped-def]
    """The frame at the middle of each phoneme in `symbols`."""
    return [min(n - 1, int(round((p.start_s + p.end_s) / 2 * fps))) for p in clip.phonemes if p.phoneme in symbols]


def polygon_mask(shape: tuple[int, ...], upper: np.ndarray, lower: np.ndarray, erode: int = 0) -> np.ndarray:
    """Pixels between two contours that run corner to corner."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.concatenate([upper, lower[::-1]])).astype(np.int32)], 1)
    if erode > 0:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    elif erode < 0:
        mask = cv2.dilate(mask, np.ones((-2 * erode + 1, -2 * erode + 1), np.uint8))
    return mask.astype(bool)


def rest_aperture(engine, identity, options=OPTIONS) -> float:  # type: ignore[no-untyped-def]
    """What `mouth_aperture` reads on the face at rest (lip seams and wrinkles are dark
    too): the openings in the tests are measured beyond it."""
    frames, _, _ = run(engine, identity, 3, options)
    return mouth_aperture(frames[-1], mouth_box(identity, options))


def open_frame_indices(clip, lips, unit: float, n: int, share: float = 0.1) -> list[int]:  # type: ignore[no-untyped-def]
    """Frames of open vowels whose inner-lip gap is at least `share` of the face unit."""
    picked = []
    for k in phoneme_frames(clip, OPEN_VOWELS, n):
        contour = lips[k]
        gap = float(np.median(contour["inner_lower"][3:8, 1] - contour["inner_upper"][3:8, 1]))
        if gap >= share * unit:
            picked.append(k)
    return sorted(set(picked))
