"""The inside of the mouth between parted lips: shadow, teeth and tongue.

The warp opens the mouth by moving tissue (the lips keep their pixels); what lies between
the lips' inner edges is drawn here, in the mouth's own coordinates (along the line from
corner to corner, and depth below the upper lip or above the lower lip), so it follows
the lips whatever their shape. There is no outline: the lips' own inner edge is the
boundary, as soft as the photo's edges (`MouthLook.edge_sigma`), and everything drawn is
blurred and grained like the photo around it.
- The cavity: the wet inner lip's colour at the lips, a shadow that deepens away from
  them and into the corners.
- The upper teeth hang from the upper lip (they belong to the skull) and show only as
  the mouth opens: separate incisors, laterals and canines with rounded biting edges,
  shaded under the lip, at their gaps and towards the corners where the arch turns away.
- The lower teeth rise from the lower lip, shorter and in shadow, only for a wide-open
  jaw that asks for them; the tongue lies low in a wide-open mouth, softly.
When the photo's mouth is already open, its own pixels are reused instead: the part under
the upper lip (its teeth) moves with the upper lip, and only what the photo never showed
is drawn.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.mouth_look import MouthLook, measure_mouth_look
from avatar_node.engines.portrait.rig import FaceRig, MouthFrame
from avatar_node.engines.portrait.strokes import soft_stroke
from avatar_node.media.texture import grain

#: Above this inner-lip gap (face units) the photo's own mouth interior is reused.
PHOTO_OPEN_GAP = 0.06
#: Above this gap the photo's interior is filled in where the warp moves the lips, so a
#: closed mouth does not show squeezed teeth.
PHOTO_PARTED_GAP = 0.012
#: Longest visible upper-teeth strip, in face units (F).
UPPER_TEETH = 0.07
LOWER_TEETH = 0.035
#: Width of a central upper incisor, in face units; the rest of the row in those widths,
#: as seen from the front (the arch foreshortens them), with their lengths.
INCISOR = 0.092
_UPPER_ROW = ((1.0, 1.0), (0.78, 0.88), (0.62, 0.95), (0.5, 0.8), (0.45, 0.75))
_LOWER_ROW = ((0.62, 1.0), (0.6, 0.95), (0.55, 0.9), (0.5, 0.8))
#: Gap (face units) over which the upper teeth come into view.
TEETH_SHOW_GAP = 0.035


class MouthInterior:
    """Draws the inner mouth into rendered frames; read-only once built (shared by streams)."""

    def __init__(self, canvas: np.ndarray, rig: FaceRig) -> None:
        self.look: MouthLook = measure_mouth_look(canvas, rig)
        self._unit = rig.unit
        self._photo: _PhotoInterior | None = None
        #: The picture the warp should move: the photo, with an open mouth's interior
        #: filled from the lips (that interior is drawn from `_photo` between the lips).
        self.warp_source = canvas
        if rig.neutral_gap() > PHOTO_OPEN_GAP:
            self._photo = _PhotoInterior(canvas, rig)
        if rig.neutral_gap() > PHOTO_PARTED_GAP:
            self.warp_source = _close_photo_mouth(canvas, rig)
        # Grain in the mouth's frame (it moves with the mouth), as large as any opening.
        side = int(np.ceil(1.2 * rig.unit)) + 16
        self._grain = grain((side, side), self.look.grain, self.look.blur, seed=11)
        self._grain.setflags(write=False)

    @property
    def reuses_photo(self) -> bool:
        return self._photo is not None

    def paint(self, frame: np.ndarray, mouth: MouthFrame, teeth: float, lower_teeth: float) -> None:
        """Paint between the inner lips of `frame` in place. `teeth` (0..1) is how much of
        the upper teeth shows below the upper lip, `lower_teeth` (0..1) of the lower."""
        upper, lower = mouth.inner_upper, mouth.inner_lower
        if mouth.gap < 2.0:
            self._paint_seam(frame, (upper + lower) / 2, 1.0 - max(mouth.gap, 0.0) / 2.0)
        if mouth.gap < 0.6:
            return
        left, right = (upper[0] + lower[0]) / 2, (upper[-1] + lower[-1]) / 2
        span = float(np.linalg.norm(right - left))
        if span < 3:
            return
        along = (right - left) / span
        down = np.array([-along[1], along[0]])
        poly = np.concatenate([upper, lower])
        look = self.look
        h, w = frame.shape[:2]
        margin = int(np.ceil(3 * look.edge_sigma)) + 1
        x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - margin, 0)
        x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + margin + 1, [w, h])
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        # A large mouth is drawn on a coarser grid and enlarged: what is drawn is blurred
        # to the photo's sharpness anyway.
        stride = 1 if span < 70 else 2 if span < 160 else 3
        ys = (y0 + np.arange(0, y1 - y0, stride, dtype=np.float32) + (stride - 1) / 2)[:, None]
        xs = (x0 + np.arange(0, x1 - x0, stride, dtype=np.float32) + (stride - 1) / 2)[None, :]
        lx, ly = float(left[0]), float(left[1])
        a = (xs - lx) * float(along[0]) + (ys - ly) * float(along[1])
        b = (xs - lx) * float(down[0]) + (ys - ly) * float(down[1])
        ua, ub = _monotonic((upper - left) @ along, span), (upper - left) @ down
        la, lb = _monotonic((lower - left) @ along, span), (lower - left) @ down
        top = np.interp(a, ua, ub).astype(np.float32)
        bottom = np.interp(a, la, lb).astype(np.float32)
        gap = np.maximum(bottom - top, 0.0)
        d_up = np.maximum(b - top, np.float32(0.0))  # depth below the upper lip
        d_low = np.maximum(bottom - b, np.float32(0.0))  # height above the lower lip
        # The opening is the lips' inner outline (the depth coordinates above only shade
        # it: near a corner of a turned face they are not exact), its edge as soft as a
        # lip's rounded edge in this photo.
        # The soft edge is centred a little inside the contours (the lips' rounded edges
        # are lip), so the lips keep their full thickness.
        inset = np.minimum(0.6 * look.edge_sigma, 0.3 * np.maximum((lower - upper) @ down, 0.0))[:, None] * down
        outline = np.concatenate([upper + inset, (lower - inset)[::-1]])
        local = ((outline - [x0, y0]) - (stride - 1) / 2) / stride
        mask = np.zeros(a.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(local * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        if not mask.any():
            return
        alpha = _blur(mask.astype(np.float32) / 255.0, np.sqrt(max(look.edge_sigma**2 - 0.35**2, 0.0)) / stride)
        u = np.clip(a / span, 0.0, 1.0)
        arch = np.sqrt(np.clip(1.0 - ((2.0 * u - 1.0) / 0.94) ** 2, 0.0, 1.0))
        across = a - np.float32(span / 2)  # along the mouth from its middle, pixels
        colour = self._cavity(d_up, d_low, gap, arch, mouth.gap)
        if lower_teeth > 0.02:
            colour = self._lower_teeth(colour, across, d_low, arch, lower_teeth, mouth.gap)
        if self._photo is not None:
            colour = self._photo.overlay(colour, u, d_up)
        else:
            colour = self._upper_teeth(colour, across, d_up, d_low, gap, arch, teeth, mouth.gap)
        colour = _blur(colour, np.sqrt(max(look.blur**2 - 0.5**2, 0.0)) / stride)
        self._add_grain(colour, (x0, y0), stride, (left + right) / 2)
        if stride > 1:
            size = (x1 - x0, y1 - y0)
            colour = cv2.resize(colour, size, interpolation=cv2.INTER_LINEAR)
            alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR)
        roi = frame[y0:y1, x0:x1]
        mixed = cv2.blendLinear(colour.astype(np.float32), roi.astype(np.float32), alpha, 1.0 - alpha)
        roi[:] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)

    # -- the parts -------------------------------------------------------------------------

    def _cavity(self, d_up: np.ndarray, d_low: np.ndarray, gap: np.ndarray, arch: np.ndarray, centre_gap: float
                ) -> np.ndarray:
        look, unit = self.look, self._unit
        colour = np.broadcast_to(look.shadow, (*d_up.shape, 3)).astype(np.float32)
        # The tongue fills the lower part of an opening that is wide enough, its crest
        # dipping towards the corners, its front (near the lower lip) in the light.
        wide = float(np.clip((centre_gap - 0.06 * unit) / (0.06 * unit), 0.0, 1.0))
        if wide > 0.0:
            crest = gap * (0.38 - 0.2 * (1.0 - arch))
            below_crest = crest - d_low
            cover = np.clip(below_crest / (0.012 * unit) + 0.5, 0.0, 1.0) * (0.75 * wide) * arch
            lit = 0.75 + 0.35 * np.clip(1.0 - d_low / np.maximum(crest, 1.0), 0.0, 1.0)
            colour = _over(colour, look.tongue * lit[..., None], cover)
        # The wet inner lips where they part: lit on the lower lip, shaded under the upper
        # (it overhangs), both giving way to the shadow within a millimetre or two.
        wet = np.maximum(np.exp(-d_low / (0.012 * unit)), 0.7 * np.exp(-d_up / (0.008 * unit)))
        colour = _over(colour, np.broadcast_to(look.mucosa, colour.shape), wet)
        return colour * (0.45 + 0.55 * arch)[..., None]  # darker into the corners

    def _upper_teeth(self, colour: np.ndarray, across: np.ndarray, d_up: np.ndarray, d_low: np.ndarray,
                     gap: np.ndarray, arch: np.ndarray, amount: float, centre_gap: float) -> np.ndarray:
        unit = self._unit
        show = amount * float(np.clip(centre_gap / (TEETH_SHOW_GAP * unit), 0.0, 1.0))
        if show < 0.03:
            return colour
        length, shade = _tooth_row(across, INCISOR * unit, _UPPER_ROW)
        # At most two thirds of the opening: the dark of the mouth shows below the teeth.
        length = np.minimum(length * (show * UPPER_TEETH * unit) * (0.6 + 0.4 * arch), 0.66 * gap)
        # Lit from above: the lip shades the teeth just under it; the biting edge is
        # a little translucent; the arch turns the side teeth away into the dark.
        light = (0.55 + 0.45 * arch**1.5) * (1.0 - 0.2 * np.exp(-d_up / (0.008 * unit)))
        edge = np.clip((d_up - (length - 0.015 * unit)) / (0.015 * unit), 0.0, 1.0)
        light = light * (1.0 - 0.1 * edge) * shade
        cover = np.clip((length - d_up) / 0.8 + 0.5, 0.0, 1.0) * np.clip((arch - 0.25) / 0.35, 0.0, 1.0)
        cover = cover * np.clip(d_low / 0.8, 0.0, 1.0)  # never over the lower lip
        return _over(colour, self.look.teeth * light[..., None], cover)

    def _lower_teeth(self, colour: np.ndarray, across: np.ndarray, d_low: np.ndarray, arch: np.ndarray,
                     amount: float, centre_gap: float) -> np.ndarray:
        unit = self._unit
        show = amount * float(np.clip((centre_gap - 0.035 * unit) / (0.04 * unit), 0.0, 1.0))
        longest = show * LOWER_TEETH * unit
        if longest < 1.5:  # a sliver of teeth would read as a line along the lip
            return colour
        length, shade = _tooth_row(across, INCISOR * unit, _LOWER_ROW)
        length = length * longest * (0.5 + 0.5 * arch)
        light = 0.8 * (0.6 + 0.4 * arch) * (1.0 - 0.2 * np.exp(-d_low / (0.01 * unit))) * shade
        cover = np.clip((length - d_low) / 0.8 + 0.5, 0.0, 1.0) * np.clip((arch - 0.3) / 0.3, 0.0, 1.0)
        cover = cover * (0.85 * min((longest - 1.5) / 2.0, 1.0))
        return _over(colour, self.look.teeth * light[..., None], cover)

    def _add_grain(self, colour: np.ndarray, origin: tuple[int, int], stride: int, centre: np.ndarray) -> None:
        """Grain like the photo's, fixed to the mouth (it moves with it), weaker in the
        dark; `colour` is on a grid of `stride` canvas pixels starting at `origin`."""
        x0, y0 = origin
        rows, cols = colour.shape[:2]
        side = self._grain.shape[0]
        gx0 = int(np.clip(x0 - round(float(centre[0])) + side // 2, 0, max(side - cols * stride, 0)))
        gy0 = int(np.clip(y0 - round(float(centre[1])) + side // 3, 0, max(side - rows * stride, 0)))
        patch = self._grain[gy0 : gy0 + rows * stride : stride, gx0 : gx0 + cols * stride : stride]
        if patch.shape != colour.shape[:2]:
            return
        skin = max(float(self.look.skin.mean()), 1.0)
        strength = np.clip(colour.mean(axis=2) * (1.0 / skin), 0.3, 1.0)
        colour += (patch * strength)[..., None]

    def _paint_seam(self, frame: np.ndarray, line: np.ndarray, strength: float) -> None:
        """The shadow where closed lips meet, as soft as the lips' edges."""
        stroke = soft_stroke(line, frame.shape, 1 if self._unit < 160 else 2, 0.6 * self.look.edge_sigma)
        if stroke is None:
            return
        (x0, y0, x1, y1), line_alpha = stroke
        # Fade the line out towards the corners, where the lips' fold is softer.
        xs = np.linspace(0.0, 1.0, x1 - x0)
        fade = np.clip(1.0 - np.abs(2 * xs - 1) ** 3, 0.2, 1.0)[None, :]
        alpha = np.clip(line_alpha * fade * 0.45 * strength, 0.0, 1.0)[..., None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        seam = 0.5 * (self.look.mucosa + self.look.shadow)
        frame[y0:y1, x0:x1] = (roi * (1.0 - alpha) + seam * alpha + 0.5).astype(np.uint8)


def _tooth_row(across: np.ndarray, width: float, row: tuple[tuple[float, float], ...]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, along the mouth from its middle: the relative length of the tooth there
    (biting edges rounded at each tooth's corners) and the shade of the gaps between teeth."""
    x = np.abs(across) / width
    length = np.zeros_like(x)
    shade = np.ones_like(x)
    start = 0.0
    for size, tooth_length in row:
        end = start + size
        inside = (x >= start) & (x < end)
        t = (x - (start + end) / 2) / (size / 2)  # -1..1 across this tooth
        length = np.where(inside, tooth_length * (1.0 - 0.45 * t**6), length)
        shade = shade * (1.0 - 0.3 * np.exp(-(((x - end) / (0.045 * size)) ** 2)))
        start = end
    shade = shade * (1.0 - 0.3 * np.exp(-((x / 0.04) ** 2)))  # between the central incisors
    return length.astype(np.float32), shade.astype(np.float32)


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
        alpha = np.clip((split - d_up) / soft + 0.5, 0.0, 1.0)
        upper = cv2.remap(self.texture, col, d_up.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
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


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.15:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


def _over(base: np.ndarray, top: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float32)
    return base * (1.0 - a) + top * a


def _monotonic(a: np.ndarray, span: float) -> np.ndarray:
    """Positions along the mouth, corner to corner, made non-decreasing (a contour that
    folds back near a corner would make the opening's outline ill-defined)."""
    return np.clip(np.maximum.accumulate(a), 0.0, span)


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    order = np.argsort(xp)
    return np.interp(x, xp[order], fp[order]).astype(np.float32)
