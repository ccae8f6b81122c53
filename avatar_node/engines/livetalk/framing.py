"""Where the generated square sits: the face-centred crop of the photo, and the canvas around it.

The model renders a square head-and-shoulders video (512x512 when released). `face_crop`
picks that square in the photo around the face. A `Compositor` puts each generated frame
back where its crop came from: on the photo itself, fitted to the session's canvas, so
the rest of the picture (background, shoulders beyond the crop) stays the photo's, with
a soft seam. Framing "auto" fills the canvas around the crop; "fit" shows the whole photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.base import FaceBox
from avatar_node.media.canvas import fit_into_canvas, place

#: Crop side as a multiple of the face box's larger side (head, hair and some shoulders).
CROP_PER_FACE = 2.4
#: The crop's centre sits this many face heights below the face box's centre.
CROP_DROP = 0.2
#: Width of the soft seam, as a fraction of the pasted square's side.
SEAM = 0.06


@dataclass(frozen=True)
class CropBox:
    """A square in photo pixels (may be smaller than the face asks when the photo is small)."""

    x: int
    y: int
    side: int


def face_crop(width: int, height: int, face: FaceBox | None) -> CropBox:
    """The square around the face, kept inside the photo; the centre square without a face."""
    limit = min(width, height)
    if face is None:
        return CropBox((width - limit) // 2, (height - limit) // 2, limit)
    side = int(round(min(limit, CROP_PER_FACE * max(face.width, face.height))))
    side = max(side, 1)
    cx = face.x + face.width / 2
    cy = face.y + face.height / 2 + CROP_DROP * face.height
    x = int(round(min(max(cx - side / 2, 0), width - side)))
    y = int(round(min(max(cy - side / 2, 0), height - side)))
    return CropBox(x, y, side)


def crop_to_model(photo: np.ndarray, box: CropBox, size: tuple[int, int]) -> np.ndarray:
    """The crop resized (area-averaged when shrinking) to the model's (height, width), RGB uint8."""
    crop = photo[box.y : box.y + box.side, box.x : box.x + box.side]
    h, w = size
    interp = cv2.INTER_AREA if box.side > max(h, w) else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (w, h), interpolation=interp))


class Compositor:
    """Pastes generated squares onto a prepared canvas. Not thread-safe (one per stream)."""

    def __init__(
        self, photo: np.ndarray, box: CropBox, canvas_width: int, canvas_height: int, framing: str = "auto"
    ) -> None:
        ph, pw = photo.shape[:2]
        scale: float
        ox: float
        oy: float
        if framing == "fit":
            # The whole photo, letterboxed; the crop lands where it is in the photo.
            background, placement = fit_into_canvas(photo, canvas_width, canvas_height)
            scale, ox, oy = placement.scale, placement.offset_x, placement.offset_y
        else:
            # The crop fitted into the canvas; the photo around it fills the rest.
            crop_place = place(box.side, box.side, canvas_width, canvas_height)
            scale = crop_place.scale
            ox = crop_place.offset_x - box.x * scale
            oy = crop_place.offset_y - box.y * scale
            # Scale first (area averaging when shrinking), then place with a pure shift;
            # where the photo ends before the canvas does, it is mirrored.
            scaled = cv2.resize(
                photo,
                (max(1, round(pw * scale)), max(1, round(ph * scale))),
                interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            )
            shift = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]], np.float64)
            background = cv2.warpAffine(
                scaled, shift, (canvas_width, canvas_height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
            )
        self.background = np.ascontiguousarray(background)
        x0, y0 = int(round(box.x * scale + ox)), int(round(box.y * scale + oy))
        side = max(1, int(round(box.side * scale)))
        # Clip the pasted square to the canvas.
        self._dst = (max(x0, 0), max(y0, 0), min(x0 + side, canvas_width), min(y0 + side, canvas_height))
        self._src_offset = (self._dst[0] - x0, self._dst[1] - y0)
        self.side = side
        self._alpha = self._seam_alpha(side, (x0, y0), canvas_width, canvas_height, (pw, ph), box)

    @staticmethod
    def _seam_alpha(
        side: int, origin: tuple[int, int], cw: int, ch: int, photo_size: tuple[int, int], box: CropBox
    ) -> np.ndarray:
        """1 inside, ramping to 0 at the edges where the photo continues beyond the crop."""
        ramp = max(1, int(round(SEAM * side)))
        profile = np.minimum(np.arange(side, dtype=np.float32) + 0.5, ramp) / ramp
        pw, ph = photo_size
        x0, y0 = origin
        # No seam on edges that are the photo's own edges or the canvas's.
        left = profile if box.x > 0 and x0 > 0 else np.ones(side, np.float32)
        right = profile[::-1] if box.x + box.side < pw and x0 + side < cw else np.ones(side, np.float32)
        top = profile if box.y > 0 and y0 > 0 else np.ones(side, np.float32)
        bottom = profile[::-1] if box.y + box.side < ph and y0 + side < ch else np.ones(side, np.float32)
        return (np.minimum(top, bottom)[:, None] * np.minimum(left, right)[None, :])[:, :, None]

    def compose(self, frame: np.ndarray) -> np.ndarray:
        """A generated RGB uint8 square (any size) -> the canvas frame (RGB uint8)."""
        if frame.shape[0] != self.side or frame.shape[1] != self.side:
            interp = cv2.INTER_AREA if frame.shape[0] > self.side else cv2.INTER_LINEAR
            frame = cv2.resize(frame, (self.side, self.side), interpolation=interp)
        out = self.background.copy()
        x0, y0, x1, y1 = self._dst
        sx, sy = self._src_offset
        src = frame[sy : sy + (y1 - y0), sx : sx + (x1 - x0)].astype(np.float32)
        alpha = self._alpha[sy : sy + (y1 - y0), sx : sx + (x1 - x0)]
        region = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = (src * alpha + region * (1.0 - alpha) + 0.5).astype(np.uint8)
        return out
