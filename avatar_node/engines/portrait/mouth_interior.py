"""Painting the inside of the mouth between parted lips: a dark cavity and a hint of teeth.

The warp only stretches the lips apart; whatever the photo showed between them would be
smeared. So the region inside the inner-lip contour is painted over, softly blended at
its edge: a dark, slightly red cavity (darker towards the throat), the upper teeth as a
light band under the upper lip, and a narrower lower band when the jaw is well open.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar_node.engines.portrait.rig import MouthFrame

_CAVITY_TOP = np.array([104, 46, 46], np.float32)
_CAVITY_DEEP = np.array([40, 16, 18], np.float32)
_TONGUE = np.array([122, 54, 56], np.float32)
_UPPER_TEETH = np.array([238, 232, 222], np.float32)
_LOWER_TEETH = np.array([184, 174, 164], np.float32)


def paint_mouth(frame: np.ndarray, mouth: MouthFrame, face_unit: float) -> None:
    """Paint the mouth interior into `frame` in place (no-op when the lips touch)."""
    if mouth.gap < 0.6:
        return
    poly = np.concatenate([mouth.inner_upper, mouth.inner_lower[::-1]])
    pad = 3
    x0, y0 = np.floor(poly.min(0)).astype(int) - pad
    x1, y1 = np.ceil(poly.max(0)).astype(int) + pad
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 3 or y1 - y0 < 2:
        return
    shift = 4  # sub-pixel polygon edges
    local = np.round((poly - [x0, y0]) * (1 << shift)).astype(np.int32)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [local], 255, cv2.LINE_AA, shift)
    alpha = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32) / 255.0
    # Narrow openings stay partly transparent so a barely parted mouth is not a black line.
    alpha *= float(np.clip(mouth.gap / 3.0, 0.35, 0.95))

    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    upper_y = np.interp(xs, mouth.inner_upper[:, 0], mouth.inner_upper[:, 1])
    lower_y = np.interp(xs, mouth.inner_lower[:, 0], mouth.inner_lower[:, 1])
    span = np.maximum(lower_y - upper_y, 1.0)
    depth = np.clip((ys - upper_y) / span, 0, 1)  # 0 under the upper lip, 1 at the lower lip
    # Darkest in the middle of the opening: the throat.
    shade = np.clip(1.0 - 1.6 * np.abs(depth - 0.55), 0, 1)[..., None]
    colour = _CAVITY_TOP * (1 - shade) + _CAVITY_DEEP * shade
    # The tongue: a lighter red rising behind the lower teeth when the jaw is open.
    tongue = (np.clip((depth - 0.6) / 0.3, 0, 1) * min(mouth.gap / (0.12 * face_unit), 1.0))[..., None]
    colour = colour * (1 - tongue) + _TONGUE * tongue

    if mouth.teeth > 0.02:
        left, right = mouth.inner_upper[0, 0], mouth.inner_upper[-1, 0]
        centre, half = (left + right) / 2, max((right - left) / 2, 1.0)
        across = np.clip(1.0 - np.abs(xs - centre) / (half * 0.78), 0, 1) ** 0.5
        tooth_h = min(0.09 * face_unit, 0.5 * mouth.gap)
        upper_band = np.clip((upper_y + tooth_h - ys) / 1.2, 0, 1) * across * min(1.0, 0.4 + mouth.teeth)
        colour = colour * (1 - upper_band[..., None]) + _UPPER_TEETH * upper_band[..., None]
        if mouth.gap > 0.12 * face_unit:
            low_h = min(0.04 * face_unit, 0.2 * mouth.gap)
            lower_band = np.clip((ys - (lower_y - low_h)) / 1.2, 0, 1) * across * mouth.teeth * 0.7
            colour = colour * (1 - lower_band[..., None]) + _LOWER_TEETH * lower_band[..., None]

    roi = frame[y0:y1, x0:x1].astype(np.float32)
    a = alpha[..., None]
    frame[y0:y1, x0:x1] = (roi * (1 - a) + colour * a + 0.5).astype(np.uint8)
