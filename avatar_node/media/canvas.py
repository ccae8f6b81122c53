"""Placing pictures on the output canvas without distortion, and filling what they leave bare.

A picture lands on the canvas by a scale and an offset (it may be cropped by the canvas
edges). Where it does not cover the canvas, the bars hold the picture's mirror image,
blurred more and more with distance from its edge and grained like it: at the edge the
bar is the picture itself (no seam), further out soft background colour (no streaks).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.media.texture import edge_blur, grain, grain_level, luma


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
        src, m, (canvas_width, canvas_height), flags=interp, borderMode=cv2.BORDER_REFLECT_101
    )
    fill_bare(canvas, placement.covered(canvas_width, canvas_height))
    return canvas


#: Distance from the picture's edge (pixels) over which a bar goes from the picture's
#: mirror image to the heavily blurred background.
_BAR_RAMP = (4.0, 60.0)
#: Blur (Gaussian sigma, pixels) of the background far from the picture.
_BAR_BLUR = 24.0
#: The bars mirror only this share of the picture next to each edge (and never less than
#: 12 or more than 80 pixels): its border, which is background, not the person.
_MIRROR_SHARE = 0.15


def fill_bare(canvas: np.ndarray, covered: tuple[int, int, int, int]) -> None:
    """Fill the canvas outside the covered box with a background a viewer accepts: the
    strip of picture along each edge mirrored outwards (folded back and forth, so the
    person in the middle is never mirrored), blurred more and more with distance from
    the picture (at the edge the bar is the picture itself, so there is no seam; beyond a
    few dozen pixels only soft colour is left), slightly darkened far from it, and grained
    like the picture so it does not look painted. Nothing is stretched, so the bars have
    no streaks. Meant for a picture set up once (a scene, an idle image): it costs about
    20-40 ms at 848x480 on one core (only the bars are worked on, and the heavy blur is
    taken at an eighth of the size)."""
    height, width = canvas.shape[:2]
    x0, y0, x1, y1 = covered
    if x1 <= x0 or y1 <= y0 or (x0, y0, x1, y1) == (0, 0, width, height):
        return
    fold_x, fold_y = _fold(width, x0, x1), _fold(height, y0, y1)
    # The whole mirrored canvas at an eighth of the size, heavily blurred.
    sw, sh = max(1, width // 8), max(1, height // 8)
    small_x = fold_x[np.minimum((np.arange(sw) * width) // sw + width // (2 * sw), width - 1)]
    small_y = fold_y[np.minimum((np.arange(sh) * height) // sh + height // (2 * sh), height - 1)]
    picture_small = cv2.resize(canvas, (sw, sh), interpolation=cv2.INTER_AREA)
    rows, cols = np.clip(small_y * sh // height, 0, sh - 1), np.clip(small_x * sw // width, 0, sw - 1)
    small = picture_small[rows[:, None], cols[None, :]]
    heavy_small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), _BAR_BLUR / 8, borderType=cv2.BORDER_REFLECT)
    inside = luma(_middle(canvas[y0:y1, x0:x1], 160))
    level, blur = grain_level(inside), edge_blur(inside)
    near, far = _BAR_RAMP
    margin = 8  # picture context for the light blur near the edge
    for bx0, by0, bx1, by1 in _bars(width, height, covered):
        cx0, cy0 = max(bx0 - margin, 0), max(by0 - margin, 0)
        cx1, cy1 = min(bx1 + margin, width), min(by1 + margin, height)
        context = canvas[fold_y[cy0:cy1, None], fold_x[None, cx0:cx1]]
        light = cv2.GaussianBlur(context, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT)
        inner = (slice(by0 - cy0, by1 - cy0), slice(bx0 - cx0, bx1 - cx0))
        region, light = context[inner].astype(np.float32), light[inner].astype(np.float32)
        heavy = _upsample_part(heavy_small, (width, height), (bx0, by0, bx1, by1))
        xs = np.arange(bx0, bx1, dtype=np.float32)[None, :]
        ys = np.arange(by0, by1, dtype=np.float32)[:, None]
        dx = np.maximum(np.maximum(x0 - xs, xs - (x1 - 1)), 0.0)
        dy = np.maximum(np.maximum(y0 - ys, ys - (y1 - 1)), 0.0)
        distance = np.sqrt(dx * dx + dy * dy)
        w_light = np.minimum(distance / near, 1.0)
        w_heavy = np.clip((distance - near) / (far - near), 0.0, 1.0)
        # A gentle fall-off of brightness far from the picture keeps the eye on it.
        dim = 1.0 - 0.15 * np.minimum(distance / 300.0, 1.0)
        region += (light - region) * w_light[..., None]
        region += (heavy - region) * w_heavy[..., None]
        region *= dim[..., None]
        region += (grain((by1 - by0, bx1 - bx0), level, blur, seed=5 + bx0 + 7 * by0) * w_light)[..., None]
        canvas[by0:by1, bx0:bx1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def _middle(picture: np.ndarray, side: int) -> np.ndarray:
    """At most side x side pixels from the middle of a picture (enough to measure it)."""
    h, w = picture.shape[:2]
    y, x = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return picture[y : y + side, x : x + side]


def _fold(size: int, start: int, stop: int) -> np.ndarray:
    """Source index per canvas index along one axis: itself inside [start, stop); outside,
    folded back and forth within the picture's border strip next to that edge."""
    length = stop - start
    strip = int(np.clip(_MIRROR_SHARE * length, min(12, length), 80))
    period = max(2 * (strip - 1), 1)
    index = np.arange(size)
    before = np.mod(start - index, period)
    after = np.mod(index - (stop - 1), period)
    fold_before = start + np.where(before <= strip - 1, before, period - before)
    fold_after = stop - 1 - np.where(after <= strip - 1, after, period - after)
    out = np.where(index < start, fold_before, np.where(index >= stop, fold_after, index))
    return np.clip(out, start, stop - 1)


def _bars(width: int, height: int, covered: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """The bare parts of the canvas as boxes: full-height side bars, then top and bottom
    bars between them."""
    x0, y0, x1, y1 = covered
    boxes = [(0, 0, x0, height), (x1, 0, width, height), (x0, 0, x1, y0), (x0, y1, x1, height)]
    return [b for b in boxes if b[2] > b[0] and b[3] > b[1]]


def _upsample_part(small: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The part `box` of `small` enlarged to `size` (bilinear, pixel centres aligned)."""
    width, height = size
    bx0, by0, bx1, by1 = box
    sx, sy = small.shape[1] / width, small.shape[0] / height
    map_x = np.repeat(((np.arange(bx0, bx1, dtype=np.float32) + 0.5) * sx - 0.5)[None, :], by1 - by0, 0)
    map_y = np.repeat(((np.arange(by0, by1, dtype=np.float32) + 0.5) * sy - 0.5)[:, None], bx1 - bx0, 1)
    return cv2.remap(small, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def fit_into_canvas(
    image: np.ndarray, canvas_width: int, canvas_height: int
) -> tuple[np.ndarray, CanvasPlacement]:
    """Return the RGB picture letterboxed onto a canvas of the given size (whole picture
    visible, aspect ratio kept), the bars filled without seams (see `fill_bare`)."""
    h, w = image.shape[:2]
    placement = place(w, h, canvas_width, canvas_height)
    interp = cv2.INTER_AREA if placement.scale < 1 else cv2.INTER_LINEAR
    fitted = cv2.resize(image, (placement.width, placement.height), interpolation=interp)
    if (placement.width, placement.height) == (canvas_width, canvas_height):
        return np.ascontiguousarray(fitted), placement
    x, y = int(placement.offset_x), int(placement.offset_y)
    canvas = np.zeros((canvas_height, canvas_width, 3), np.uint8)
    canvas[y : y + placement.height, x : x + placement.width] = fitted
    fill_bare(canvas, (x, y, x + placement.width, y + placement.height))
    return canvas, placement
