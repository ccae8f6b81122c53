"""Blinks as a lid movement: the upper lid slides down over a still eyeball.

Nothing is painted. In each eye's neighbourhood the warp's source positions are moved
along the face's vertical axis, column by column:
- the eyeball between the lids stays where it is, so the iris is covered from the top
  as the lid comes down and is wholly hidden when the lids meet;
- the upper lid's skin (from above the crease down to its lash line) is stretched down
  to the lid's new edge, the lashes travelling with it;
- the lower lid rises a little, its skin compressed upwards.
At the eye corners the lids meet already, so the movement fades to nothing there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.rig import FaceRig

_EYES = (
    (topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER),
    (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER),
)
#: How far the lower lid rises when closed, as a share of the opening.
LOWER_LID_RISE = 0.15


class EyeLids:
    def __init__(self, rig: FaceRig) -> None:
        self._rig = rig
        self._ex, self._ey = rig.axes
        self._pad = int(np.ceil(0.15 * rig.unit)) + 2

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
                order_u, order_l = np.argsort(ua), np.argsort(la)
                top_lid = np.interp(a, ua[order_u], ub[order_u])
                bottom_lid = np.interp(a, la[order_l], lb[order_l])
                gap = np.maximum(bottom_lid - top_lid, 0.0)
                new_bottom = bottom_lid - LOWER_LID_RISE * closure * gap
                new_top = top_lid + closure * (new_bottom - top_lid)
                # The sources of the lids' edges sit a little outside the landmark contours,
                # so no white of the eye or iris is dragged along with a lid.
                edge = top_lid - closure * (0.15 * gap + 0.7 * np.minimum(gap, 1.0))
                lower_edge = bottom_lid + closure * (0.15 * gap + 0.5 * np.minimum(gap, 1.0))
                crease = top_lid - gap - 0.06 * unit
                floor = bottom_lid + 0.7 * gap + 0.03 * unit
                # The lash line keeps its thickness and travels with the lid's edge; the
                # skin between the crease and the lashes is what stretches.
                lash = closure * (0.2 * gap + 0.5 * np.minimum(gap, 1.0))
                source = b.copy()
                over_lid = (b >= crease) & (b < new_top - lash)
                k = (edge - lash - crease) / np.maximum(new_top - lash - crease, 1e-3)
                source = np.where(over_lid, crease + (b - crease) * k, source)
                on_lashes = (b >= new_top - lash) & (b < new_top)
                source = np.where(on_lashes, edge + (b - new_top), source)
                under_lid = (b > new_bottom) & (b <= floor)
                k2 = (floor - lower_edge) / np.maximum(floor - new_bottom, 1e-3)
                source = np.where(under_lid, floor + (b - floor) * k2, source)
                q += ((source - b)[..., None] * ey.astype(np.float32)).astype(np.float32)

        return slide
