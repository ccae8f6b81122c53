"""Closing eyelids: the warp pulls the upper lid down; this paints the lid over the eye.

A warp alone squashes the iris and lashes into a dark line that still reads as an open
eye on small faces. So as the lids close, the eye opening is covered with the lid's own
skin colour (sampled once, just above the upper lid) and a soft lash line is drawn
where the lids meet.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.rig import FaceRig

_EYES = (
    (topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER),
    (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER),
)


class EyelidPainter:
    def __init__(self, canvas: np.ndarray, rig: FaceRig) -> None:
        self._rig = rig
        up = rig.axes[1] * -1.0
        self._lid_colours = []
        h, w = canvas.shape[:2]
        for upper, _ in _EYES:
            pts = rig.vertices[list(upper[1:-1])] + up * rig.unit * 0.07
            xs = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
            ys = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
            self._lid_colours.append(np.median(canvas[ys, xs].astype(np.float32), axis=0))

    def paint(self, frame: np.ndarray, offsets: np.ndarray, closure: float) -> None:
        """Cover the eye openings in `frame` in proportion to `closure` (0 open .. 1 shut)."""
        if closure < 0.25:
            return
        strength = min((closure - 0.25) / 0.6, 1.0)
        verts = self._rig.vertices
        for (upper, lower), lid in zip(_EYES, self._lid_colours):
            up = verts[list(upper)] + offsets[list(upper)]
            lo = verts[list(lower)] + offsets[list(lower)]
            poly = np.concatenate([up, lo[::-1]])
            pad = 3
            x0, y0 = np.floor(poly.min(0)).astype(int) - pad
            x1, y1 = np.ceil(poly.max(0)).astype(int) + pad
            fh, fw = frame.shape[:2]
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
            if x1 - x0 < 3 or y1 - y0 < 2:
                continue
            shift = 4
            local = np.round((poly - [x0, y0]) * (1 << shift)).astype(np.int32)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(mask, [local], 255, cv2.LINE_AA, shift)
            mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
            alpha = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] / 255.0 * strength
            roi = frame[y0:y1, x0:x1].astype(np.float32)
            painted = roi * (1 - alpha) + lid * alpha
            # The lash line: where the lids meet (the lower contour of the closed eye).
            lash = np.zeros_like(mask)
            line = np.round((lo - [x0, y0]) * (1 << shift)).astype(np.int32)
            cv2.polylines(lash, [line], False, 255, 1, cv2.LINE_AA, shift)
            lash_a = lash.astype(np.float32)[..., None] / 255.0 * 0.55 * strength
            painted = painted * (1 - lash_a) + (lid * 0.35) * lash_a
            frame[y0:y1, x0:x1] = (painted + 0.5).astype(np.uint8)
