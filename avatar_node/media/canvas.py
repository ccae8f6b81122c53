"""Placing pictures on the output canvas without distortion, and filling what they leave bare.

A picture lands on the canvas by a scale and an offset (it may be cropped by the canvas
edges). Where it does not cover the canvas, the bars continue its own edge outwards and
blur it more and more with distance, so the frame reads as one picture with no seam: at
the picture's edge the bar equals the edge pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CanvasPlacement:
    """Where a source picture lands on the canvas: canvas = source * scale + offset.

    `offset_x`, `offset_y` may be negative (the picture is cropped); `width`, `height`
    are the size of the whole scaled picture.
    """

    scale: float
    offset_x: float
    offset_y: float
    width: int
    height: int

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale + self.offset_x, y * self.scale + self.offset_y

    def covered(self, canvas_width: int, canvas_height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the canvas pixels the picture covers entirely."""
        x0 = max(0, int(np.ceil(self.offset_x - 1e-6)))
        y0 = max(0, int(np.ceil(self.offset_y - 1e-6)))
        x1 = min(canvas_width, int(np.floor(self.offset_x + self.width + 1e-6)))
        y1 = min(canvas_height, int(np.floor(self.offset_y + self.height + 1e-6)))
        return x0, y0, max(x0, x1), max(y0, y1)


def place(src_width: int, src_height: int, canvas_width: int, canvas_height: int) -> CanvasPlacement:
    """Scale to fit entirely inside the canvas (contain), centred on whole pixels."""
    scale = min(canvas_width / src_width, canvas_height / src_height)
    width = max(1, min(canvas_width, round(src_width * scale)))
    height = max(1, min(canvas_height, round(src_height * scale)))
    return CanvasPlacement(
        scale, float((canvas_width - width) // 2), float((canvas_height - height) // 2), width, height
    )


def placed(scale: float, offset_x: float, offset_y: float, src_width: int, src_height: int) -> CanvasPlacement:
    """A placement from a scale and the canvas position of the picture's top-left corner."""
    return CanvasPlacement(
        scale, float(offset_x), float(offset_y), max(1, round(src_width * scale)), max(1, round(src_height * scale))
    )


def render_on_canvas(
    image: np.ndarray, placement: CanvasPlacement, canvas_width: int, canvas_height: int
) -> np.ndarray:
    """The RGB picture drawn on a canvas at `placement`, bare parts filled without seams."""
    h, w = image.shape[:2]
    s = placement.scale
    src = image
    sx = sy = 1.0
    if s < 0.75:
        # Shrink by area first (no aliasing), then place with the exact residual transform.
        src = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        sx, sy = src.shape[1] / w, src.shape[0] / h
    m = np.array(
        [[s / sx, 0.0, placement.offset_x], [0.0, s / sy, placement.offset_y]], np.float64
    )
    # Pixel centres: canvas (x + 0.5) = s * (src x + 0.5) + offset.
    m[0, 2] += 0.5 * (s / sx) - 0.5
    m[1, 2] += 0.5 * (s / sy) - 0.5
    interp = cv2.INTER_CUBIC if s > 1.05 else cv2.INTER_LINEAR
    canvas = cv2.warpAffine(
        src, m, (canvas_width, canvas_height), flags=interp, borderMode=cv2.BORDER_REPLICATE
    )
    fill_bare(canvas, placement.covered(canvas_width, canvas_height))
    return canvas


def fill_bare(canvas: np.ndarray, covered: tuple[int, int, int, int]) -> None:
    """Blur the canvas outside the covered box more and more with distance from it.

    The canvas outside `covered` must already hold the picture's edge pixels continued
    outwards (edge replication); this turns those streaks into a soft backdrop.
    """
    height, width = canvas.shape[:2]
    x0, y0, x1, y1 = covered
    if (x0, y0, x1, y1) == (0, 0, width, height):
        return
    if x1 <= x0 or y1 <= y0:
        return
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    dx = np.maximum(np.maximum(x0 - xs, xs - (x1 - 1)), 0.0)
    dy = np.maximum(np.maximum(y0 - ys, ys - (y1 - 1)), 0.0)
    distance = np.sqrt(dx * dx + dy * dy)  # 0 inside the picture
    base = canvas.astype(np.float32)
    out = base.copy()
    # Blend towards ever blurrier copies: each level takes over as the distance grows.
    for sigma in (3.0, 9.0, 24.0, 60.0):
        blurred = cv2.GaussianBlur(base, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        weight = np.clip((distance - sigma * 0.6) / (sigma * 1.5), 0.0, 1.0)[..., None]
        out = out * (1.0 - weight) + blurred * weight
    # A gentle fall-off of brightness far from the picture keeps the eye on it.
    out *= (1.0 - 0.18 * np.clip(distance / 300.0, 0.0, 1.0))[..., None]
    bare = distance > 0
    canvas[bare] = np.clip(out[bare] + 0.5, 0, 255).astype(np.uint8)


def fit_into_canvas(
    image: np.ndarray, canvas_width: int, canvas_height: int
) -> tuple[np.ndarray, CanvasPlacement]:
    """Return the RGB picture letterboxed onto a canvas of the given size (whole picture
    visible, aspect ratio kept), the bars filled without seams."""
    h, w = image.shape[:2]
    placement = place(w, h, canvas_width, canvas_height)
    if (placement.width, placement.height) == (canvas_width, canvas_height):
        interp = cv2.INTER_AREA if placement.scale < 1 else cv2.INTER_LINEAR
        fitted = cv2.resize(image, (canvas_width, canvas_height), interpolation=interp)
        return np.ascontiguousarray(fitted), placement
    return render_on_canvas(image, placement, canvas_width, canvas_height), placement
