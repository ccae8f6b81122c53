"""How sharp and how grainy a picture is, and grain to match it.

Whatever is drawn into a photo (a mouth's inside, the bars beside a narrow picture) must
be neither crisper nor cleaner than the photo around it, or the eye finds it at once.
- `edge_blur` measures the photo's sharpness as the Gaussian blur (sigma, pixels) of its
  sharpest edges, by re-blurring: an edge blurred by sigma keeps
  sqrt(sigma^2 + s0^2) / sigma of its gradient when blurred again by s0, so the ratio of
  the two gradients at the edge gives sigma (Zhuo & Sim, "Defocus map estimation from a
  single image", 2011).
- `grain_level` measures the photo's fine texture and noise: the robust spread of what a
  small blur takes away, where the picture is smooth.
- `grain` makes zero-mean grain of that spread, correlated over about as many pixels as
  the photo's own (an enlarged photo has coarse grain).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Re-blur used to measure edge blur (pixels).
_REBLUR = 1.0
#: What the gradient operator adds to a measured edge blur (pixels, in quadrature).
_SOBEL_SPREAD = 0.77
#: Bounds of what `edge_blur` reports: a sharper photo than 0.5 px is treated as 0.5 (an
#: anti-aliased line), a softer one than 6 px as 6.
EDGE_BLUR_RANGE = (0.5, 6.0)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an RGB picture, float32."""
    rgb = np.asarray(rgb, np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def edge_blur(grey: np.ndarray) -> float:
    """Gaussian sigma (pixels) of the sharpest edges in a greyscale picture: the median over
    the strongest 2 % of its edge pixels (the rest are shading, soft by nature)."""
    grey = np.asarray(grey, np.float32)
    g1 = _gradient(grey)
    g2 = _gradient(cv2.GaussianBlur(grey, (0, 0), _REBLUR))
    # Edge centres: strong gradients that are the largest of their 3x3 neighbourhood.
    peak = (g1 >= cv2.dilate(g1, np.ones((3, 3), np.uint8)) - 1e-6) & (g1 >= max(float(np.percentile(g1, 98)), 4.0))
    if peak.sum() < 20:
        return EDGE_BLUR_RANGE[1]
    ratio = g1[peak] / np.maximum(g2[peak], 1e-3)
    measured = float(np.median(_REBLUR / np.sqrt(np.maximum(ratio**2 - 1.0, 1e-3))))
    # The 3x3 Sobel operator itself spreads an edge by about 0.77 px.
    sigma = np.sqrt(max(measured**2 - _SOBEL_SPREAD**2, 0.0))
    return float(np.clip(sigma, *EDGE_BLUR_RANGE))


def grain_level(grey: np.ndarray) -> float:
    """Standard deviation (luma levels) of the picture's fine grain where it is smooth."""
    grey = np.asarray(grey, np.float32)
    fine = grey - cv2.GaussianBlur(grey, (0, 0), 1.5)
    smooth = _gradient(cv2.GaussianBlur(grey, (0, 0), 2.0)) < 3.0
    values = fine[smooth] if smooth.sum() >= 100 else fine.ravel()
    mad = float(np.median(np.abs(values - np.median(values))))
    return 1.4826 * mad


def grain(shape: tuple[int, int], level: float, blur: float, seed: int = 0) -> np.ndarray:
    """(h, w) float32 zero-mean grain with standard deviation `level`, smoothed over `blur`
    pixels like the photo's own (a fixed seed: the same picture gets the same grain)."""
    noise = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    correlation = max(blur - EDGE_BLUR_RANGE[0], 0.0)
    if correlation > 0.05:
        smooth = cv2.GaussianBlur(noise, (0, 0), correlation)
        noise = (smooth / max(float(smooth.std()), 1e-6)).astype(np.float32)
    return noise * np.float32(level)


def _gradient(grey: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.sqrt(gx * gx + gy * gy)
