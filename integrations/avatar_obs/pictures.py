"""Small grey thumbnails of what was sent and what OBS shows, and how to compare them.

The health watchdog needs to know whether the picture we send changes (an avatar that blinks
and moves) while OBS keeps showing the same image: a dead feed still reports PLAYING. Decoding
one keyframe a second costs a millisecond or two.
"""

from __future__ import annotations

import collections
import io
import threading
import time
from dataclasses import dataclass

import av
import cv2
import numpy as np
from avatar_client.decode import has_parameter_sets
from PIL import Image

#: Thumbnail width; the height follows the picture's aspect ratio.
THUMB_WIDTH = 64
#: A pixel "changed" between two thumbnails when its grey level moved by more than this.
PIXEL_CHANGE = 10


def thumbnail(rgb_or_grey: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """A small uint8 grey picture."""
    image = rgb_or_grey
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels that differ visibly between two thumbnails (resized to match)."""
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16)) > PIXEL_CHANGE))


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    """The largest grey-level change of any pixel between two thumbnails."""
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def is_blank(thumb: np.ndarray) -> bool:
    """Nothing to see: black, or one flat colour."""
    return float(thumb.std()) < 3.0


def decode_image(data: bytes) -> np.ndarray:
    """RGB array from PNG/JPEG bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class Picture:
    at: float  # time.monotonic() when it was sent
    thumb: np.ndarray


class SentPictures:
    """Thumbnails of the keyframes published recently (thread-safe)."""

    def __init__(self, keep_s: float = 30.0, every_s: float = 0.9) -> None:
        self._keep_s = keep_s
        self._every_s = every_s
        self._items: collections.deque[Picture] = collections.deque()
        self._lock = threading.Lock()
        self._last_at = -1e9

    def add_keyframe(self, access_unit: bytes, codec_config: bytes = b"") -> None:
        """Decode a keyframe (at most about once a second) and keep its thumbnail."""
        now = time.monotonic()
        if now - self._last_at < self._every_s:
            return
        self._last_at = now
        rgb = decode_keyframe(access_unit, codec_config)
        if rgb is not None:
            self.add(thumbnail(rgb), now)

    def add(self, thumb: np.ndarray, at: float | None = None) -> None:
        at = time.monotonic() if at is None else at
        with self._lock:
            self._items.append(Picture(at, thumb))
            while self._items and self._items[0].at < at - self._keep_s:
                self._items.popleft()

    def since(self, start: float) -> list[Picture]:
        with self._lock:
            return [p for p in self._items if p.at >= start]

    def latest(self) -> Picture | None:
        with self._lock:
            return self._items[-1] if self._items else None


def decode_keyframe(access_unit: bytes, codec_config: bytes = b"") -> np.ndarray | None:
    """The RGB picture of one H.264 IDR access unit (None if it does not decode)."""
    data = access_unit if has_parameter_sets(access_unit) or not codec_config else codec_config + access_unit
    decoder = av.CodecContext.create("h264", "r")
    try:
        frames = decoder.decode(av.Packet(data))
        frames += decoder.decode(None)
    except av.error.FFmpegError:
        return None
    return frames[0].to_ndarray(format="rgb24") if frames else None


