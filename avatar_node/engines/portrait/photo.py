"""Turning uploaded bytes into an RGB picture, refusing what cannot be used.

Pillow reads the header first (it is lazy), so the pixel count is checked before any
pixel buffer is allocated: a 20000 x 20000 upload is refused without allocating 1.2 GB.
EXIF orientation is applied, so phone photos stand upright.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from avatar_node.engines.base import AvatarInputError

#: Largest photo accepted, in pixels (width * height).
MAX_PIXELS = 40_000_000
#: Longest side kept after decoding; larger photos are reduced (the canvas is far smaller).
MAX_WORKING_SIDE = 2048


def decode_photo(data: bytes) -> np.ndarray:
    """Decode a photo into an RGB uint8 array, or raise AvatarInputError saying what to do."""
    if not data:
        raise AvatarInputError("The avatar image is empty: send a JPEG or PNG photo of a face.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # header only; nothing decoded yet
            if width * height > MAX_PIXELS:
                raise AvatarInputError(
                    f"The avatar image is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
                    f"the limit is {MAX_PIXELS // 1_000_000} megapixels. Resize it (2048 px on the "
                    "long side is plenty) and upload it again."
                )
            image.draft("RGB", (MAX_WORKING_SIDE, MAX_WORKING_SIDE))  # cheap JPEG downscale
            image = ImageOps.exif_transpose(image)
            if image.mode != "RGB":
                image = image.convert("RGBA").convert("RGB") if "A" in image.mode else image.convert("RGB")
            if max(image.size) > MAX_WORKING_SIDE:
                image.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.Resampling.LANCZOS)
            return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    except AvatarInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AvatarInputError(
            "The avatar image could not be read as a picture. Send a JPEG, PNG or WebP photo "
            f"of a face ({type(exc).__name__}: {exc})."
        ) from exc
