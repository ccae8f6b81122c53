"""Soft lines drawn into frames (a closed lid's edge, the seam of closed lips): a polyline
rasterised with anti-aliasing, then blurred, so the stroke is as soft as the photo's own
edges wherever it runs."""

from __future__ import annotations

import cv2
import numpy as np


def soft_stroke(
    points: np.ndarray, shape: tuple[int, ...], thickness: float, sigma: float
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The box (x0, y0, x1, y1) around a polyline (canvas pixels) in a frame of `shape`, and
    the stroke's opacity over that box (float32, 1 at its strongest); None when the line
    falls outside the frame."""
    h, w = shape[:2]
    pad = int(np.ceil(3 * sigma + thickness)) + 2
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + pad + 1, [w, h])
    x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    pts = np.round((points - [x0, y0]) * 16).astype(np.int32)
    cv2.polylines(mask, [pts], False, 1.0, max(1, int(round(thickness))), cv2.LINE_AA, 4)
    soft = cv2.GaussianBlur(mask, (0, 0), sigma) if sigma >= 0.15 else mask
    return (x0, y0, x1, y1), (soft * np.float32(1.0 / max(float(soft.max()), 1e-6))).astype(np.float32)
