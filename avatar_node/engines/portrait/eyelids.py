"""Blinks as a lid movement: the upper lid slides down over a still eyeball.

In each eye's neighbourhood the warp's source positions are moved along the face's
vertical axis, column by column:
- the eyeball between the lids stays where it is, so the iris is covered from the top
  as the lid comes down and is wholly hidden when the lids meet;
- the upper lid's skin, from above the crease down to a little above its lash line, is
  stretched down to the lid's new edge. Its sources stop short of the lash line by a
  share of the eye's opening, so they never reach the iris, even where the landmark lid
  edge lies on it (behind glasses, or a lid that covers part of the iris): a closed eye
  shows no dark dot where the pupil was;
- the lower lid rises a little, its skin compressed upwards.
At the eye corners the lids meet already, so the movement fades to nothing there.
The lid's edge is then drawn (`draw_lashes`): a soft line in the colour of this photo's
own lash line, as soft as its edges, along the moving edge of the lid. Where the lids
meet, it covers the seam between the two lids' sources, so a closed lid's edge is one
smooth line, not a step from pixel row to pixel row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.rig import FaceRig
from avatar_node.engines.portrait.strokes import soft_stroke

_EYES = (
    (topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER),
    (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER),
)
#: How far the lower lid rises when closed, as a share of the opening.
LOWER_LID_RISE = 0.15
#: The lid skin's sources stop this share of the opening (plus a pixel) above the
#: landmark lid edge: the lash line and anything under it stay behind.
LID_SKIN_STOP = 0.3
#: Thickness of the drawn lash line, in face units, and its strongest opacity.
LASH_THICKNESS = 0.011
LASH_OPACITY = 0.75


class EyeLids:
    def __init__(self, rig: FaceRig, canvas: np.ndarray, softness: float) -> None:
        """`canvas`: the photo on the canvas (for the lash colour); `softness`: the photo's
        edge blur (Gaussian sigma, canvas pixels)."""
        self._rig = rig
        self._ex, self._ey = rig.axes
        self._pad = int(np.ceil(0.15 * rig.unit)) + 2
        self._softness = max(softness, 0.5)
        self.lash_colour = _lash_colour(canvas, rig)

    def slider(self, closure: float) -> Callable[[np.ndarray], None] | None:
        """A function that edits source positions (the rig's `slide` hook) to close the
        lids by `closure` (0 open .. 1 shut), or None when the eyes are open.

        It works on the photo's side of the warp: a source position on the lid or the
        eyeball is moved to what a closing lid would show there. (Near the eyes the other
        shapes only slide the iris, which stays under the lid either way.)"""
        if closure <= 1e-3:
            return None
        closure = min(closure, 1.0)
        verts = self._rig.vertices
        x0, y0 = self._rig.roi[:2]
        unit = self._rig.unit
        pad = self._pad
        ex, ey = self._ex, self._ey

        def slide(src: np.ndarray) -> None:
            h, w = src.shape[:2]
            for upper, lower in _EYES:
                up, lo = verts[list(upper)], verts[list(lower)]
                centre = (up[0] + up[-1]) / 2
                ua, ub = (up - centre) @ ex, (up - centre) @ ey
                la, lb = (lo - centre) @ ex, (lo - centre) @ ey
                opening = float(np.max(lb - ub))
                if opening < 0.5:
                    continue
                reach_up = opening + 0.06 * unit
                reach_down = 0.7 * opening + 0.03 * unit
                corners = np.concatenate([up, lo])
                bx0, by0 = np.floor(corners.min(0) - [0, reach_up]).astype(int) - pad - [x0, y0]
                bx1, by1 = np.ceil(corners.max(0) + [0, reach_down]).astype(int) + pad - [x0, y0]
                bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, w), min(by1, h)
                if bx1 <= bx0 or by1 <= by0:
                    continue
                q = src[by0:by1, bx0:bx1]
                rel = q - centre.astype(np.float32)
                a = rel @ ex.astype(np.float32)
                b = rel @ ey.astype(np.float32)
                top_lid, bottom_lid = _lid_curves(a, ua, ub, la, lb)
                gap = np.maximum(bottom_lid - top_lid, 0.0)
                new_bottom = bottom_lid - LOWER_LID_RISE * closure * gap
                new_top = top_lid + closure * (new_bottom - top_lid)
                crease = top_lid - 0.75 * gap - 0.04 * unit  # below a low brow
                floor = bottom_lid + 0.7 * gap + 0.03 * unit
                # The lid's skin, crease down to just above the lash line, stretched down
                # to the lid's new edge.
                skin_edge = top_lid - closure * (LID_SKIN_STOP * gap + np.minimum(gap, 1.0))
                source = b.copy()
                over_lid = (b >= crease) & (b < new_top)
                k = (skin_edge - crease) / np.maximum(new_top - crease, 1e-3)
                source = np.where(over_lid, crease + (b - crease) * k, source)
                # The lower lid's skin, compressed upwards; its edge sampled a little below
                # the landmark, so no white of the eye comes up with it.
                lower_edge = bottom_lid + closure * (0.15 * gap + 0.5 * np.minimum(gap, 1.0))
                under_lid = (b > new_bottom) & (b <= floor)
                k2 = (floor - lower_edge) / np.maximum(floor - new_bottom, 1e-3)
                source = np.where(under_lid, floor + (b - floor) * k2, source)
                q += ((source - b)[..., None] * ey.astype(np.float32)).astype(np.float32)

        return slide

    def lid_edges(self, closure: float, offsets: np.ndarray) -> list[np.ndarray]:
        """Where each upper lid's edge is (canvas pixels, outer corner to inner corner,
        24 points) at this closure; `offsets`: the rig's vertex offsets for the frame (the
        eyes move with the head)."""
        closure = min(max(closure, 0.0), 1.0)
        verts = self._rig.vertices + offsets
        ex, ey = self._ex, self._ey
        edges = []
        for upper, lower in _EYES:
            up, lo = verts[list(upper)], verts[list(lower)]
            centre = (up[0] + up[-1]) / 2
            ua, ub = (up - centre) @ ex, (up - centre) @ ey
            la, lb = (lo - centre) @ ex, (lo - centre) @ ey
            a = np.linspace(float(ua.min()), float(ua.max()), 24)
            top_lid, bottom_lid = _lid_curves(a, ua, ub, la, lb)
            gap = np.maximum(bottom_lid - top_lid, 0.0)
            new_bottom = bottom_lid - LOWER_LID_RISE * closure * gap
            edge = top_lid + closure * (new_bottom - top_lid)
            edges.append(centre + a[:, None] * ex + edge[:, None] * ey)
        return edges

    def draw_lashes(self, frame: np.ndarray, closure: float, offsets: np.ndarray) -> None:
        """Draw the closing lid's edge into a rendered frame (in place)."""
        if closure <= 0.05:
            return
        ex = self._ex
        thickness = max(LASH_THICKNESS * self._rig.unit, 0.8)
        sigma = float(np.hypot(self._softness, 0.5 * thickness))
        strength = LASH_OPACITY * min(closure / 0.3, 1.0)
        for curve in self.lid_edges(closure, offsets):
            stroke = soft_stroke(curve, frame.shape, thickness, sigma)
            if stroke is None:
                continue
            (x0, y0, x1, y1), mask = stroke
            # Thinner towards the corners, where the lids already meet.
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            length = max(float((curve[-1] - curve[0]) @ ex), 1.0)
            along = ((xs - curve[0][0]) * ex[0] + (ys - curve[0][1]) * ex[1]) / length
            fade = np.clip(np.minimum(along, 1.0 - along) / 0.2, 0.0, 1.0)
            alpha = (mask * fade * strength)[..., None]
            region = frame[y0:y1, x0:x1].astype(np.float32)
            frame[y0:y1, x0:x1] = np.clip(region * (1.0 - alpha) + self.lash_colour * alpha + 0.5, 0, 255).astype(
                np.uint8
            )


def _lid_curves(a: np.ndarray, ua: np.ndarray, ub: np.ndarray, la: np.ndarray, lb: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The upper and lower lid edges (across the face) at positions `a` along the eye."""
    order_u, order_l = np.argsort(ua), np.argsort(la)
    return np.interp(a, ua[order_u], ub[order_u]), np.interp(a, la[order_l], lb[order_l])


def _lash_colour(canvas: np.ndarray, rig: FaceRig) -> np.ndarray:
    """The photo's lash line: the darker pixels along both upper lids, away from the irises."""
    h, w = canvas.shape[:2]
    samples = []
    for (upper, _), iris in zip(_EYES, rig.irises):
        lid = rig.vertices[list(upper)]
        t = np.linspace(0, len(lid) - 1, 40)
        line = np.stack([np.interp(t, np.arange(len(lid)), lid[:, 0]), np.interp(t, np.arange(len(lid)), lid[:, 1])], 1)
        line = line[np.linalg.norm(line - iris, axis=1) > 1.2 * rig.iris_radius]
        for lift in (0.0, 1.0, 2.0):
            pts = np.round(line - lift * rig.axes[1]).astype(int)
            samples.append(canvas[np.clip(pts[:, 1], 0, h - 1), np.clip(pts[:, 0], 0, w - 1)])
    colours = np.concatenate(samples).astype(np.float32)
    if not len(colours):
        return np.zeros(3, np.float32)
    luma = colours @ np.array([0.299, 0.587, 0.114], np.float32)
    darkest = colours[luma <= np.percentile(luma, 30)]
    return np.median(darkest, axis=0).astype(np.float32)
