"""Placing pictures on the output canvas without distortion, and filling what they leave bare.

A picture lands on the canvas by a scale and an offset (it may be cropped by the canvas
edges). Where it does not cover the canvas, the bars continue its own edge outwards and
blur it more and more with distance, so the frame reads as one picture with no seam: at
the picture's edge the bar equals the edge pixels.
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


#: Blur (Gaussian sigma, pixels) of the bars at growing distance from the picture's edge.
_BAR_SIGMAS = (0.0, 3.0, 9.0, 24.0, 60.0)


def fill_bare(canvas: np.ndarray, covered: tuple[int, int, int, int]) -> None:
    """Fill the canvas outside the covered box from the picture's own edge: each bar
    continues the edge row or column outwards, blurred more and more with distance from
    it and slightly darkened, so at the edge the bar equals the picture and there is no
    seam. Cheap enough to run per frame (1-D blurs of one row or column per side)."""
    height, width = canvas.shape[:2]
    x0, y0, x1, y1 = covered
    if x1 <= x0 or y1 <= y0 or (x0, y0, x1, y1) == (0, 0, width, height):
        return
    # Top and bottom bars over the picture's columns, then left and right bars over the
    # whole height (their edge columns then include the top and bottom bars).
    if y0 > 0:
        canvas[:y0, x0:x1] = _bar(canvas[y0 : y0 + 3, x0:x1].mean(0), y0)[::-1]
    if y1 < height:
        canvas[y1:, x0:x1] = _bar(canvas[y1 - 3 : y1, x0:x1].mean(0), height - y1)
    if x0 > 0:
        canvas[:, :x0] = _bar(canvas[:, x0 : x0 + 3].mean(1), x0)[::-1].transpose(1, 0, 2)
    if x1 < width:
        canvas[:, x1:] = _bar(canvas[:, x1 - 3 : x1].mean(1), width - x1).transpose(1, 0, 2)


def _bar(edge: np.ndarray, length: int) -> np.ndarray:
    """(length, n, 3) uint8: the edge line (n, 3) continued over `length` lines away
    from the picture, each line blurred along itself by its distance."""
    edge = edge.astype(np.float32)[None]  # (1, n, 3)
    levels = [edge[0]] + [
        cv2.GaussianBlur(edge, (0, 0), sigmaX=sigma, sigmaY=0.1, borderType=cv2.BORDER_REFLECT)[0]
        for sigma in _BAR_SIGMAS[1:]
    ]
    distance = np.arange(1, length + 1, dtype=np.float32)
    # Piecewise-linear weights over the levels: level i is reached at distance 2.5 * sigma_i.
    reach = np.array([0.0] + [2.5 * s for s in _BAR_SIGMAS[1:]], np.float32)
    position = np.interp(distance, reach, np.arange(len(reach), dtype=np.float32))
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, len(levels) - 1)
    frac = (position - lower)[:, None, None]
    stack = np.stack(levels)  # (levels, n, 3)
    out = stack[lower] * (1.0 - frac) + stack[upper] * frac
    # A gentle fall-off of brightness far from the picture keeps the eye on it.
    out *= (1.0 - 0.18 * np.clip(distance / 300.0, 0.0, 1.0))[:, None, None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fit_into_canvas(
    image: np.ndarray, canvas_width: int, canvas_height: int
) -> tuple[np.ndarray, CanvasPlacement]:
    """Return the RGB picture letterboxed onto a canvas of the given size (whole picture
    visible, aspect ratio kept), the bars filled without seams. Fast enough per frame."""
    h, w = image.shape[:2]
    placement = place(w, h, canvas_width, canvas_height)
    interp = cv2.INTER_AREA if placement.scale < 1 else cv2.INTER_LINEAR
    fitted = cv2.resize(image, (placement.width, placement.height), interpolation=interp)
    if (placement.width, placement.height) == (canvas_width, canvas_height):
        return np.ascontiguousarray(fitted), placement
    canvas = np.empty((canvas_height, canvas_width, 3), np.uint8)
    x, y = int(placement.offset_x), int(placement.offset_y)
    canvas[y : y + placement.height, x : x + placement.width] = fitted
    fill_bare(canvas, (x, y, x + placement.width, y + placement.height))
    return canvas, placement
