"""Turning uploaded bytes into an RGB picture, refusing what cannot be used.

Pillow reads the header first (it is lazy), so the pixel count is checked before any
pixel buffer is allocated: a 20000 x 20000 upload is refused without allocating 1.2 GB.
EXIF orientation is applied, so phone photos stand upright.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from avatar_node.engines.base import AvatarInputError

#: Largest photo accepted, in pixels (width * height).
MAX_PIXELS = 40_000_000
#: Longest side kept after decoding; larger photos are reduced (the canvas is far smaller).
MAX_WORKING_SIDE = 2048


@dataclass(frozen=True)
class Photo:
    """A decoded photo: its pixels (reduced to MAX_WORKING_SIDE) and its upright full size."""

    rgb: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Working pixels per original pixel (<= 1)."""
        return self.rgb.shape[1] / self.width


def decode_photo(data: bytes) -> Photo:
    """Decode a photo, or raise AvatarInputError saying what is wrong and what to do."""
    if not data:
        raise AvatarInputError("The avatar image is empty: send a JPEG or PNG photo of a face.", "BAD_IMAGE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image: Image.Image = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as exc:  # Pillow's own limit is above ours
                raise AvatarInputError(_too_large("far more than"), "IMAGE_TOO_LARGE") from exc
            width, height = image.size  # header only; nothing decoded yet
            if width * height > MAX_PIXELS:
                raise AvatarInputError(_too_large(f"{width}x{height}, {width * height / 1e6:.0f}"), "IMAGE_TOO_LARGE")
            image.draft("RGB", (MAX_WORKING_SIDE, MAX_WORKING_SIDE))  # cheap JPEG downscale
            image = ImageOps.exif_transpose(image)
            # Upright size of the original (draft may have decoded a reduced JPEG).
            swapped = image.size[0] != image.size[1] and (image.size[0] < image.size[1]) != (width < height)
            full_w, full_h = (height, width) if swapped else (width, height)
            if image.mode != "RGB":
                image = image.convert("RGB")
            if max(image.size) > MAX_WORKING_SIDE:
                image.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.Resampling.LANCZOS)
            return Photo(np.ascontiguousarray(np.asarray(image, dtype=np.uint8)), full_w, full_h)
    except AvatarInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise AvatarInputError(
            f"The avatar image is too large to open safely ({exc}). Send a photo of at most "
            "40 megapixels, e.g. resized to 2048 pixels on its long side.",
            "IMAGE_TOO_LARGE",
        ) from exc
    except UnidentifiedImageError as exc:
        raise AvatarInputError(
            "The avatar image could not be read as a picture. Send a JPEG, PNG or WebP photo of a face.",
            "BAD_IMAGE",
        ) from exc
    except (OSError, ValueError) as exc:
        raise AvatarInputError(
            "The avatar image could not be read as a picture. Send a JPEG, PNG or WebP photo "
            f"of a face ({type(exc).__name__}: {exc}).",
            "BAD_IMAGE",
        ) from exc


def _too_large(size: str) -> str:
    return (
        f"The avatar image is too large ({size} megapixels); the limit is "
        f"{MAX_PIXELS // 1_000_000} megapixels. Resize it (2048 px on the long side is plenty) "
        "and upload it again."
    )
