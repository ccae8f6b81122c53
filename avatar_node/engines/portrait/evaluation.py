"""Measuring the mouth from pixels alone, for tests and benchmarks.

`mouth_box` says where to look (from the identity's landmarks, in canvas pixels);
`mouth_aperture` looks only at the RGB pixels of a frame, so it can be applied to frames
that went through an H.264 encode and decode, or came back over the wire.

Aperture is the area of pixels in the box much darker than the face's skin (the inner
mouth), divided by the box width: roughly the mean height of the opening in pixels.
"""

from __future__ import annotations

import numpy as np

from avatar_node.engines.base import Identity, StreamOptions


def mouth_box(identity: Identity, options: StreamOptions) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) canvas pixels around the mouth and the jaw's travel when open."""
    from avatar_node.engines.portrait.clip_avatar import ClipIdentityData
    from avatar_node.engines.portrait.clip_stream import clip_mouth_box
    from avatar_node.engines.portrait.engine import PortraitIdentityData, canvas_rig

    if isinstance(identity.data, ClipIdentityData):
        return clip_mouth_box(identity.data, options)
    if not isinstance(identity.data, PortraitIdentityData):
        raise ValueError("mouth_box needs an identity prepared by the portrait engine")
    _, rig = canvas_rig(identity.data, options)
    x0, y0, x1, y1 = rig.mouth_box()
    return max(x0, 0), max(y0, 0), min(x1, options.width), min(y1, options.height)


def eye_boxes(identity: Identity, options: StreamOptions) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) canvas pixels around each eye, for blink measurements."""
    from avatar_node.engines.portrait.engine import PortraitIdentityData, canvas_rig

    if not isinstance(identity.data, PortraitIdentityData):
        raise ValueError("eye_boxes needs an identity prepared by the portrait engine")
    _, rig = canvas_rig(identity.data, options)
    return rig.eye_boxes()


def eye_openness(frame: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Dark area (iris, pupil, lash line) in an eye box divided by its width: drops
    sharply when the lids close."""
    x0, y0, x1, y1 = box
    luma = _luma(frame[y0:y1, x0:x1])
    if luma.size == 0:
        return 0.0
    return float((luma < 0.5 * np.percentile(luma, 80)).sum()) / max(x1 - x0, 1)


def region_change(frame: np.ndarray, reference: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean absolute luma difference between two frames inside a box."""
    x0, y0, x1, y1 = box
    return float(np.mean(np.abs(_luma(frame[y0:y1, x0:x1]) - _luma(reference[y0:y1, x0:x1]))))


def _luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def mouth_aperture(frame: np.ndarray, box: tuple[int, int, int, int], reference: float | None = None) -> float:
    """Opening of the mouth in pixels (dark area / box width) in an RGB frame.

    `reference` is the skin luma to compare against; by default the 75th percentile of the
    box, which is skin and lips in any mouth shape.
    """
    x0, y0, x1, y1 = box
    luma = _luma(frame[y0:y1, x0:x1])
    if luma.size == 0:
        return 0.0
    ref = float(np.percentile(luma, 75)) if reference is None else reference
    dark = luma < 0.45 * ref
    return float(dark.sum()) / max(x1 - x0, 1)
