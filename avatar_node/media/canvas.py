"""Fitting pictures into the output canvas without distortion."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CanvasPlacement:
    """Where a source picture lands on the canvas: canvas = source * scale + offset."""

    scale: float
    offset_x: int
    offset_y: int
    width: int  # size of the scaled picture on the canvas
    height: int

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale + self.offset_x, y * self.scale + self.offset_y


def place(src_width: int, src_height: int, canvas_width: int, canvas_height: int) -> CanvasPlacement:
    """Scale to fit entirely inside the canvas (contain), centred."""
    scale = min(canvas_width / src_width, canvas_height / src_height)
    width = max(1, min(canvas_width, round(src_width * scale)))
    height = max(1, min(canvas_height, round(src_height * scale)))
    return CanvasPlacement(
        scale, (canvas_width - width) // 2, (canvas_height - height) // 2, width, height
    )


def fit_into_canvas(
    image: np.ndarray, canvas_width: int, canvas_height: int
) -> tuple[np.ndarray, CanvasPlacement]:
    """Return the RGB picture letterboxed onto a canvas of the given size.

    The bars are a blurred, stretched copy of the picture so that the frame reads as one
    image rather than a photo on black; the picture itself keeps its aspect ratio.
    """
    h, w = image.shape[:2]
    placement = place(w, h, canvas_width, canvas_height)
    interp = cv2.INTER_AREA if placement.scale < 1 else cv2.INTER_LINEAR
    fitted = cv2.resize(image, (placement.width, placement.height), interpolation=interp)
    if (placement.width, placement.height) == (canvas_width, canvas_height):
        return np.ascontiguousarray(fitted), placement
    small = cv2.resize(image, (32, 18), interpolation=cv2.INTER_AREA)
    backdrop = cv2.GaussianBlur(
        cv2.resize(small, (canvas_width, canvas_height), interpolation=cv2.INTER_LINEAR), (0, 0), 9
    )
    canvas = (backdrop.astype(np.float32) * 0.6).astype(np.uint8)
    x, y = placement.offset_x, placement.offset_y
    canvas[y : y + placement.height, x : x + placement.width] = fitted
    return canvas, placement
