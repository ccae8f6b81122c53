"""The inside of the mouth between parted lips: cavity, teeth and tongue.

The warp stretches the lips apart; what lies between them is drawn here, in the
mouth's own coordinates (along the line from corner to corner, and depth below the
upper lip or above the lower lip), so it follows the lips whatever their shape:
- the upper teeth hang from the upper lip (they belong to the skull): a strip whose
  visible height is set per frame, shortest towards the corners where the arch turns
  away, shaded under the lip;
- the lower teeth rise from the lower lip only when the jaw is well open;
- behind them a dark cavity and, low in it, the tongue.
Every colour is derived from the photo itself (teeth from the whites of the eyes and
the skin, cavity and tongue from the lips), so the photo's white balance is kept and a
greyscale photo stays greyscale. When the photo's mouth is already open, its own pixels
are reused instead: the part under the upper lip (its teeth) moves with the upper lip,
and only what the photo never showed is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.rig import FaceRig, MouthFrame

#: Above this inner-lip gap (face units) the photo's own mouth interior is reused.
PHOTO_OPEN_GAP = 0.06
#: Above this gap the photo's interior is filled in where the warp moves the lips, so a
#: closed mouth does not show squeezed teeth.
PHOTO_PARTED_GAP = 0.012
#: Longest visible upper-teeth strip, in face units.
UPPER_TEETH = 0.085
LOWER_TEETH = 0.045


@dataclass(frozen=True)
class MouthColours:
    teeth: np.ndarray  # RGB float32
    cavity: np.ndarray
    tongue: np.ndarray
    lip: np.ndarray


def photo_colours(canvas: np.ndarray, rig: FaceRig) -> MouthColours:
    """Colours for the mouth interior, sampled from the photo on the canvas."""
    verts = rig.vertices
    # A third of the way in from the outer contour: on the lip even where the inner
    # contour of a smiling photo lies on the teeth.
    lip_points = np.concatenate([
        (2 * verts[list(topo.LIPS_OUTER_UPPER[2:-2])] + verts[list(topo.LIPS_INNER_UPPER[2:-2])]) / 3,
        (2 * verts[list(topo.LIPS_OUTER_LOWER[2:-2])] + verts[list(topo.LIPS_INNER_LOWER[2:-2])]) / 3,
    ])
    lip = np.median(_sample(canvas, lip_points), axis=0)
    cheeks = verts[[50, 280, 101, 330, 205, 425]]
    skin = np.median(_sample(canvas, cheeks), axis=0)
    # The whites of the eyes: between the lids, away from the iris, the brighter half.
    whites = []
    for (upper, lower), iris in zip(
        ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER), (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER)), rig.irises
    ):
        up, lo = verts[list(upper[1:-1])], verts[list(lower[1:-1])]
        for f in (0.35, 0.5, 0.65):
            pts = up + (lo - up) * f
            far = np.linalg.norm(pts - iris, axis=1) > rig.iris_radius * 1.15
            whites.append(pts[far])
    sclera = _sample(canvas, np.concatenate(whites)) if whites else skin[None]
    luma = sclera @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = sclera[luma >= np.median(luma)] if len(sclera) > 3 else sclera
    white = np.median(bright, axis=0) if len(bright) else skin
    # Teeth: nearly neutral under the photo's own white balance - the whites' hue, most
    # of its saturation removed - and brighter than the skin (a shadowed or made-up eye
    # region must not make them skin-coloured).
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    white_luma = float(white @ weights)
    skin_luma = float(skin @ weights)
    luma = float(np.clip(max(white_luma * 0.92, skin_luma * 1.35), 0.0, 228.0))
    teeth = luma + 0.3 * (white - white_luma)
    return MouthColours(
        teeth=teeth.astype(np.float32),
        cavity=(_saturate(lip, 1.6) * 0.42).astype(np.float32),
        tongue=(_saturate(lip, 1.3) * 0.72).astype(np.float32),
        lip=lip.astype(np.float32),
    )


class MouthInterior:
    """Draws the inner mouth into rendered frames (one per stream)."""

    def __init__(self, canvas: np.ndarray, rig: FaceRig) -> None:
        self.colours = photo_colours(canvas, rig)
        self._unit = rig.unit
        self._photo: _PhotoInterior | None = None
        #: The picture the warp should move: the photo, with an open mouth's interior
        #: filled from the lips (that interior is drawn from `_photo` between the lips).
        self.warp_source = canvas
        if rig.neutral_gap() > PHOTO_OPEN_GAP:
            self._photo = _PhotoInterior(canvas, rig)
        if rig.neutral_gap() > PHOTO_PARTED_GAP:
            self.warp_source = _close_photo_mouth(canvas, rig)

    @property
    def reuses_photo(self) -> bool:
        return self._photo is not None

    def paint(self, frame: np.ndarray, mouth: MouthFrame, teeth: float, lower_teeth: float) -> None:
        """Paint between the inner lips of `frame` in place. `teeth` (0..1) is how much of
        the upper teeth shows below the upper lip, `lower_teeth` (0..1) of the lower."""
        upper, lower = mouth.inner_upper, mouth.inner_lower
        if mouth.gap < 2.0:
            self._paint_seam(frame, (upper + lower) / 2, 1.0 - mouth.gap / 2.0)
        if mouth.gap < 0.6:
            return
        left, right = (upper[0] + lower[0]) / 2, (upper[-1] + lower[-1]) / 2
        span = float(np.linalg.norm(right - left))
        if span < 3:
            return
        along = (right - left) / span
        down = np.array([-along[1], along[0]])
        poly = np.concatenate([upper, lower])
        h, w = frame.shape[:2]
        x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + 2, [w, h])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        # A large mouth is drawn on a coarser grid and enlarged: its interior is smooth and
        # its edges stay as soft, relative to its size, as a small mouth's.
        stride = 1 if span < 70 else 2 if span < 160 else 3
        ys = (y0 + np.arange(0, y1 - y0, stride, dtype=np.float32) + (stride - 1) / 2)[:, None]
        xs = (x0 + np.arange(0, x1 - x0, stride, dtype=np.float32) + (stride - 1) / 2)[None, :]
        a = (xs - left[0]) * along[0] + (ys - left[1]) * along[1]
        b = (xs - left[0]) * down[0] + (ys - left[1]) * down[1]
        ua, ub = _monotonic((upper - left) @ along, span), (upper - left) @ down
        la, lb = _monotonic((lower - left) @ along, span), (lower - left) @ down
        top = np.interp(a, ua, ub).astype(np.float32)
        bottom = np.interp(a, la, lb).astype(np.float32)
        gap = np.maximum(bottom - top, 0.0)
        d_up = b - top  # depth below the upper lip
        d_low = bottom - b  # height above the lower lip
        # The opening is the lips' inner outline, filled with anti-aliased edges (the
        # depth coordinates above only shade it: near a corner of a turned face they are
        # not exact).
        outline = np.concatenate([upper, lower[::-1]])
        local = ((outline - [x0, y0]) - (stride - 1) / 2) / stride
        mask = np.zeros(a.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(local * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        inside = mask.astype(np.float32) / 255.0
        d_up = np.maximum(d_up, 0.0)
        d_low = np.maximum(d_low, 0.0)
        if not inside.any():
            return
        u = np.clip(a / span, 0.0, 1.0)
        arch = np.sqrt(np.clip(1.0 - ((2.0 * u - 1.0) / 0.92) ** 2, 0.0, 1.0))
        colour = self._cavity(u, d_up, gap, arch)
        unit = self._unit
        tooth_u = 0.085 * unit / span
        if lower_teeth > 0.02:
            low = lower_teeth * LOWER_TEETH * unit * arch
            lower_row = self._teeth(u, d_low, low, arch, 0.6, tooth_u * 0.7)
            colour = _over(colour, lower_row, np.clip(low - d_low + 0.5, 0, 1))
        if self._photo is not None:
            colour = self._photo.overlay(colour, u, d_up)
        else:
            tooth = teeth * UPPER_TEETH * unit * arch
            colour = _over(
                colour, self._teeth(u, d_up, tooth, arch, 1.0, tooth_u), np.clip((tooth - d_up) / 1.5 + 0.5, 0, 1)
            )
        # The lips shade the opening's rim.
        rim = np.exp(-np.maximum(np.minimum(d_up, d_low), 0.0) / max(0.012 * unit, 0.8))
        colour *= (1.0 - 0.25 * rim)[..., None]
        alpha: np.ndarray = inside * min(1.0, 0.45 + mouth.gap / 3.0)
        if stride > 1:
            size = (x1 - x0, y1 - y0)
            colour = cv2.resize(colour, size, interpolation=cv2.INTER_LINEAR)
            alpha = cv2.resize(alpha.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        alpha = alpha[..., None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(roi * (1.0 - alpha) + colour * alpha + 0.5, 0, 255).astype(np.uint8)

    def _paint_seam(self, frame: np.ndarray, line: np.ndarray, strength: float) -> None:
        """The dark line where closed lips meet."""
        h, w = frame.shape[:2]
        x0, y0 = np.maximum(np.floor(line.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(line.max(0)).astype(int) + 3, [w, h])
        if x1 - x0 < 2 or y1 - y0 < 1:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = np.round((line - [x0, y0]) * 16).astype(np.int32)
        thickness = 1 if self._unit < 160 else 2
        cv2.polylines(mask, [pts], False, 255, thickness, cv2.LINE_AA, 4)
        # Fade the line out towards the corners, where the lips' fold is softer.
        xs = np.linspace(0.0, 1.0, x1 - x0)
        fade = np.clip(1.0 - np.abs(2 * xs - 1) ** 3, 0.2, 1.0)[None, :]
        alpha = (mask.astype(np.float32) / 255.0 * fade * 0.55 * strength)[..., None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        seam = self.colours.lip * 0.45
        frame[y0:y1, x0:x1] = (roi * (1.0 - alpha) + seam * alpha + 0.5).astype(np.uint8)

    def _cavity(self, u: np.ndarray, d_up: np.ndarray, gap: np.ndarray, arch: np.ndarray) -> np.ndarray:
        c = self.colours
        t = np.clip(d_up / np.maximum(gap, 1e-3), 0.0, 1.0)
        # Darkest at the back of the throat (centre) and in the corners' folds.
        shade = 0.72 + 0.28 * np.abs(t - 0.45) / 0.55
        colour = c.cavity[None, None, :] * (shade * (0.6 + 0.4 * arch))[..., None]
        # The tongue lies low in an open mouth, its top dipping towards the sides.
        open_enough = np.clip((gap - 0.05 * self._unit) / (0.05 * self._unit), 0.0, 1.0)
        tongue_top = 0.55 + 0.3 * (1.0 - arch)
        tongue = np.clip((t - tongue_top) * gap / 1.5, 0.0, 1.0) * open_enough * arch
        lit = 0.75 + 0.25 * np.clip(1.0 - (t - tongue_top) / 0.3, 0.0, 1.0)
        tongue_colour = c.tongue[None, None, :] * lit[..., None]
        return _over(colour, tongue_colour, tongue)

    def _teeth(
        self, u: np.ndarray, depth: np.ndarray, length: np.ndarray, arch: np.ndarray, light: float, tooth_u: float
    ) -> np.ndarray:
        c = self.colours
        unit = self._unit
        # Side teeth turn away from the light; the lip shades the teeth just under it;
        # the biting edge is a little translucent.
        shade = light * (0.7 + 0.3 * arch) * (1.0 - 0.22 * np.exp(-depth / max(0.01 * unit, 0.7)))
        edge = np.clip((length - depth) / max(0.012 * unit, 0.8), 0.0, 1.0)
        shade = shade * (0.82 + 0.18 * edge)
        # Faint gaps between the front teeth (`tooth_u`: an incisor's width in units of u).
        phase = (u - 0.5) / max(tooth_u, 1e-3)
        gaps = np.exp(-(((phase - np.round(phase)) * 6.0) ** 2)) * (np.abs(phase) < 3.5)
        shade = shade * (1.0 - 0.16 * gaps)
        return c.teeth[None, None, :] * shade[..., None]


class _PhotoInterior:
    """The photo's own open mouth: the part under the upper lip (the upper teeth, as a
    rule) hangs from the upper lip; below it the interior is drawn."""

    UPPER_SHARE = 0.5

    def __init__(self, canvas: np.ndarray, rig: FaceRig) -> None:
        verts = rig.vertices
        upper = verts[list(topo.LIPS_INNER_UPPER)]
        lower = verts[list(topo.LIPS_INNER_LOWER)]
        left, right = (upper[0] + lower[0]) / 2, (upper[-1] + lower[-1]) / 2
        span = float(np.linalg.norm(right - left))
        along = (right - left) / max(span, 1e-6)
        down = np.array([-along[1], along[0]])
        ua, ub = (upper - left) @ along, (upper - left) @ down
        la, lb = (lower - left) @ along, (lower - left) @ down
        cols = max(int(round(span)), 2)
        a = np.linspace(0, span, cols)
        top = _interp(a, ua, ub)
        gap = np.maximum(_interp(a, la, lb) - top, 0.0)
        rows = max(int(np.ceil(gap.max())) + 1, 2)
        d = np.arange(rows, dtype=np.float64)[:, None]
        px = left[0] + a[None, :] * along[0] + (top[None, :] + d) * down[0]
        py = left[1] + a[None, :] * along[1] + (top[None, :] + d) * down[1]
        self.texture = cv2.remap(
            canvas, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        ).astype(np.float32)
        self.gap = gap.astype(np.float32)  # per column, pixels
        self.cols = cols

    def overlay(self, colour: np.ndarray, u: np.ndarray, d_up: np.ndarray) -> np.ndarray:
        col = (u * (self.cols - 1)).astype(np.float32)
        split = np.interp(col, np.arange(self.cols), self.gap).astype(np.float32) * self.UPPER_SHARE
        soft = 2.0  # pixels over which the photo's part fades into the drawn interior
        alpha = np.clip((split - d_up) / soft + 0.5, 0.0, 1.0) * (d_up >= -0.5)
        upper = cv2.remap(self.texture, col, np.maximum(d_up, 0).astype(np.float32), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        return _over(colour, upper, alpha)


def _close_photo_mouth(canvas: np.ndarray, rig: FaceRig) -> np.ndarray:
    """A copy of the canvas with the open mouth's interior filled in from the lips, so a
    mouth closed by the warp shows lips meeting, not squeezed teeth."""
    verts = rig.vertices
    poly = np.concatenate([verts[list(topo.LIPS_INNER_UPPER)], verts[list(topo.LIPS_INNER_LOWER)][::-1]])
    outline = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillPoly(outline, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
    grow = max(3, int(round(0.03 * rig.unit)) | 1)  # the landmarks may sit inside the teeth
    mask = cv2.dilate(outline, np.ones((grow, grow), np.uint8))
    x0, y0, x1, y1 = rig.mouth_box(0.1)
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = max(x0 - 4, 0), max(y0 - 4, 0), min(x1 + 4, w), min(y1 + 4, h)
    out = canvas.copy()
    out[y0:y1, x0:x1] = cv2.inpaint(
        np.ascontiguousarray(canvas[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1]), 3, cv2.INPAINT_TELEA
    )
    return out


def _over(base: np.ndarray, top: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float32)
    return base * (1.0 - a) + top * a


def _saturate(rgb: np.ndarray, factor: float) -> np.ndarray:
    """A colour with its distance from grey scaled (a grey stays grey): the inside of a
    mouth is a deeper red than the lips' surface."""
    grey = float(rgb @ np.array([0.299, 0.587, 0.114], np.float32))
    return np.clip(grey + factor * (rgb - grey), 0.0, 255.0)


def _monotonic(a: np.ndarray, span: float) -> np.ndarray:
    """Positions along the mouth, corner to corner, made non-decreasing (a contour that
    folds back near a corner would make the opening's outline ill-defined)."""
    return np.clip(np.maximum.accumulate(a), 0.0, span)


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    order = np.argsort(xp)
    return np.interp(x, xp[order], fp[order]).astype(np.float32)


def _sample(canvas: np.ndarray, points: np.ndarray) -> np.ndarray:
    h, w = canvas.shape[:2]
    xs = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    return canvas[ys, xs].astype(np.float32)
