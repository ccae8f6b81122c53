"""Pictures for the camera: fitting RGB frames to the camera size and converting them to the
pixel format the device uses, once per distinct frame (a repeated frame reuses its bytes)."""

from __future__ import annotations

import cv2
import numpy as np

#: Formats converted here, by the name pyvirtualcam's PixelFormat uses. Limited-range BT.601,
#: the convention libyuv (and so pyvirtualcam's own converters) follows.
FORMATS = ("RGB", "BGR", "GRAY", "I420", "NV12", "YUYV", "UYVY")


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale an RGB image to fit width x height, centred on black bars (no cropping)."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    new_w, new_h = max(2, round(w * scale)), max(2, round(h * scale))
    scaled = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = scaled
    return canvas


def convert(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """An HxWx3 uint8 RGB image in `fmt`, shaped as pyvirtualcam expects for that format."""
    rgb = np.ascontiguousarray(rgb)
    if fmt == "RGB":
        return rgb
    if fmt == "BGR":
        return np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "GRAY":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if fmt == "I420":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    if fmt == "NV12":
        h, w = rgb.shape[:2]
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
        y, chroma = i420[: w * h], i420[w * h :]
        u, v = chroma[: w * h // 4], chroma[w * h // 4 :]
        uv = np.empty(w * h // 2, np.uint8)
        uv[0::2], uv[1::2] = u, v
        return np.concatenate([y, uv])
    if fmt == "YUYV":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2)
    if fmt == "UYVY":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
    raise ValueError(f"unsupported pixel format {fmt!r}; use one of {', '.join(FORMATS)}")


def to_rgb(data: np.ndarray, fmt: str, width: int, height: int) -> np.ndarray:
    """The inverse of `convert` (for checking what a device received)."""
    flat = np.ascontiguousarray(data).reshape(-1)
    if fmt == "RGB":
        return flat.reshape(height, width, 3)
    if fmt == "BGR":
        return flat.reshape(height, width, 3)[..., ::-1]
    if fmt == "GRAY":
        return cv2.cvtColor(flat.reshape(height, width), cv2.COLOR_GRAY2RGB)
    if fmt == "I420":
        return cv2.cvtColor(flat.reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_I420)
    if fmt == "NV12":
        return cv2.cvtColor(flat.reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_NV12)
    if fmt == "YUYV":
        return cv2.cvtColor(flat.reshape(height, width, 2), cv2.COLOR_YUV2RGB_YUY2)
    if fmt == "UYVY":
        return cv2.cvtColor(flat.reshape(height, width, 2), cv2.COLOR_YUV2RGB_UYVY)
    raise ValueError(f"unsupported pixel format {fmt!r}")
