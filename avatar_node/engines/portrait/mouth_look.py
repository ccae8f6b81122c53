"""What the inside of this person's mouth should look like, measured once from the photo.

Every colour comes from the photo, so its white balance is kept and a greyscale photo
stays greyscale, and every colour lies between the lips', the skin's and neutral grey
(nothing drawn may take a hue the face does not have):
- the cavity is the lip colour darkened: the wet inner lip (mucosa) at the lips' edge,
  a deep shadow further in, the tongue in between;
- the teeth are the whites of the eyes when those are bright and neutral (the usual
  case); behind glasses, in shadow or under make-up they are not, and the teeth are a
  natural off-white instead: the skin's own tint, less than half as strong, at a
  brightness between the skin's and the photo's brightest face pixels.
Sharpness and grain are measured on the face as it sits on the canvas, so what is drawn
is blurred and grained to match (`avatar_node.media.texture`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.rig import FaceRig
from avatar_node.media.texture import edge_blur, grain_level, luma

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: The rounded inner edge of a lip turns from light to shadow over about this much of the
#: face unit (F, the outer eye-corner distance, ~9 cm): about a millimetre.
LIP_EDGE_SOFTNESS = 0.011
#: Sclera samples are used for the teeth only when this bright relative to the skin, and
#: with at most this much colour (chroma / luma).
SCLERA_MIN_BRIGHTNESS = 1.15
SCLERA_MAX_TINT = 0.12
#: Otherwise the teeth take this share of the skin's tint (its colour relative to grey):
#: the photo's colour cast, on an off-white.
TEETH_TINT = 0.45


@dataclass(frozen=True)
class MouthLook:
    lip: np.ndarray  # RGB float32
    skin: np.ndarray
    teeth: np.ndarray
    mucosa: np.ndarray  # the wet inner lip, where the lips part
    shadow: np.ndarray  # deep in the mouth
    tongue: np.ndarray
    edge_sigma: float  # blur of the opening's edge (canvas pixels)
    blur: float  # the photo's own edge blur (canvas pixels)
    grain: float  # the photo's grain (luma levels, standard deviation)


def measure_mouth_look(canvas: np.ndarray, rig: FaceRig) -> MouthLook:
    verts = rig.vertices
    # A third of the way in from the outer contour: on the lip even where the inner
    # contour of a smiling photo lies on the teeth.
    lip_points = np.concatenate([
        (2 * verts[list(topo.LIPS_OUTER_UPPER[2:-2])] + verts[list(topo.LIPS_INNER_UPPER[2:-2])]) / 3,
        (2 * verts[list(topo.LIPS_OUTER_LOWER[2:-2])] + verts[list(topo.LIPS_INNER_LOWER[2:-2])]) / 3,
    ])
    lip = np.median(sample(canvas, lip_points), axis=0)
    skin = np.median(sample(canvas, verts[[50, 280, 101, 330, 205, 425]]), axis=0)
    x0, y0, x1, y1 = rig.roi
    face = luma(canvas[y0:y1, x0:x1])
    blur = edge_blur(face)
    return MouthLook(
        lip=lip.astype(np.float32),
        skin=skin.astype(np.float32),
        teeth=_teeth_colour(canvas, rig, skin, float(np.percentile(face, 99))),
        mucosa=(saturate(lip, 1.6) * 0.7).astype(np.float32),
        shadow=(saturate(lip, 1.5) * 0.2).astype(np.float32),
        tongue=(saturate(lip, 1.5) * 0.5).astype(np.float32),
        edge_sigma=max(blur, LIP_EDGE_SOFTNESS * rig.unit),
        blur=blur,
        grain=grain_level(face),
    )


def _teeth_colour(canvas: np.ndarray, rig: FaceRig, skin: np.ndarray, brightest: float) -> np.ndarray:
    skin_luma = float(skin @ _LUMA)
    sclera = _sclera(canvas, rig)
    if len(sclera):
        white = np.median(sclera, axis=0)
        white_luma = float(white @ _LUMA)
        tint = float(np.abs(white - white_luma).max()) / max(white_luma, 1.0)
        if white_luma >= SCLERA_MIN_BRIGHTNESS * skin_luma and tint <= SCLERA_MAX_TINT and white[2] <= white[0] + 4:
            return (0.95 * white).astype(np.float32)
    level = float(np.clip(max(1.3 * skin_luma, 0.88 * brightest), 0.0, 225.0))
    level = max(level, min(1.1 * skin_luma, 250.0))
    return np.clip(level + (skin - skin_luma) * (level / max(skin_luma, 1.0)) * TEETH_TINT, 0, 255).astype(np.float32)


def _sclera(canvas: np.ndarray, rig: FaceRig) -> np.ndarray:
    """The brighter half of the pixels between the lids and away from the irises."""
    verts = rig.vertices
    points = []
    for (upper, lower), iris in zip(
        ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER), (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER)), rig.irises
    ):
        up, lo = verts[list(upper[1:-1])], verts[list(lower[1:-1])]
        for f in (0.35, 0.5, 0.65):
            pts = up + (lo - up) * f
            points.append(pts[np.linalg.norm(pts - iris, axis=1) > rig.iris_radius * 1.15])
    colours = sample(canvas, np.concatenate(points))
    if len(colours) < 4:
        return colours[:0]
    values = colours @ _LUMA
    return colours[values >= np.median(values)]


def saturate(rgb: np.ndarray, factor: float) -> np.ndarray:
    """A colour with its distance from grey scaled (a grey stays grey)."""
    grey = float(rgb @ _LUMA)
    return np.clip(grey + factor * (rgb - grey), 0.0, 255.0)


def sample(canvas: np.ndarray, points: np.ndarray) -> np.ndarray:
    h, w = canvas.shape[:2]
    xs = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    return canvas[ys, xs].astype(np.float32)
