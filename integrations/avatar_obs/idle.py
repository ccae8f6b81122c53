"""Frames made here while the node is unavailable: the last picture seen, held still.

They use the node's own encoder settings (same size, profile, keyframe interval), so the
stream's parameter sets normally do not even change when the node's frames resume.
"""

from __future__ import annotations

import numpy as np
from avatar_client.feed_items import FeedFormat

from avatar_node.media.canvas import fit_into_canvas
from avatar_node.media.encoder import H264Encoder

from .pictures import decode_image, decode_keyframe


def still_from_photo(photo: bytes | None, width: int, height: int) -> np.ndarray:
    """The reference photo fitted to the output size; a dark grey picture if there is none."""
    if photo:
        try:
            rgb = decode_image(photo)
        except (OSError, ValueError):
            rgb = None
        if rgb is not None:
            fitted, _ = fit_into_canvas(rgb, width, height)
            return fitted
    return np.full((height, width, 3), 32, np.uint8)


class IdleFrames:
    """Encodes a still picture, one access unit per frame; the first after `hold()` is an IDR."""

    def __init__(self, fmt: FeedFormat, picture: np.ndarray, keyframe_interval: int) -> None:
        self._fmt = fmt
        self._keyframe_interval = keyframe_interval
        self._picture = picture
        self._encoder: H264Encoder | None = None
        self._silence = np.zeros(0, np.int16)  # the publisher fills silence up to the next frame

    def hold(self, last_keyframe: bytes | None = None) -> None:
        """Start a new run of idle frames, showing `last_keyframe` if it decodes."""
        if last_keyframe is not None:
            rgb = decode_keyframe(last_keyframe, self._fmt.codec_config)
            if rgb is not None and rgb.shape[:2] == (self._fmt.height, self._fmt.width):
                self._picture = rgb
        self.close()
        self._encoder = H264Encoder(
            self._fmt.width, self._fmt.height, self._fmt.fps, keyframe_interval=self._keyframe_interval
        )

    def next(self) -> tuple[bytes, bool, np.ndarray]:
        """(access unit, keyframe, audio) for the next idle frame."""
        if self._encoder is None:
            self.hold()
        assert self._encoder is not None
        encoded = self._encoder.encode(self._picture)
        return encoded.data, encoded.keyframe, self._silence

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None
