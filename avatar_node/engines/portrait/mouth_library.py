"""The clip's mouths in one canonical frame, with their shapes measured.

The canonical frame is fixed to the parts of the face that do not move when the mouth
does: the eye corners and the nose. Its unit is the outer eye-corner distance (F), its
origin the point between the outer eye corners, its x axis along them. Each clip frame
gets an affine map from that frame to its pixels (least squares over those points, so
small turns and nods are followed); through it the frame's lower face - lips, teeth,
chin and jaw line - is resampled into a fixed patch. A mouth taken from one frame is put
on another by the second frame's map: the upper lip stays under the nose, and the chin
goes where the chosen mouth's jaw puts it.

Shape descriptors, in F units of the canonical frame: inner opening (lip gap at the
centre), width (corner to corner), rounding (outer height over width), teeth (share of
the opening that is bright and grey), jaw (the chin's depth below the eyes), dark (the
dark opening between the outer lips, over the width: how open the mouth looks).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo

#: Landmarks that do not move with the mouth: eye corners, nose bridge, tip, base and wings.
STABLE = (33, 133, 362, 263, 168, 6, 197, 1, 2, 98, 327)
SUBNASALE = 2
#: The patch: canonical x in [X0, X1], y in [Y0, Y1], PIXELS_PER_F pixels per F.
X0, X1, Y0, Y1 = -0.85, 0.85, 0.35, 2.0
PIXELS_PER_F = 72
PATCH_W = int(round((X1 - X0) * PIXELS_PER_F))
PATCH_H = int(round((Y1 - Y0) * PIXELS_PER_F))
#: Blend mask: half width, and its feather (F units): the mask fades over this distance.
MASK_HALF_WIDTH = 0.66
FEATHER = 0.24
#: Room below the lower of the two chins (base frame's and chosen mouth's), F units.
CHIN_MARGIN = 0.22
#: Mask bottoms are made in these steps (F units), from MASK_LOWEST to the patch's end.
MASK_STEP = 0.04

DESCRIPTORS = ("opening", "width", "rounding", "teeth", "jaw", "dark")
OPENING, WIDTH, ROUNDING, TEETH, JAW, DARK = range(6)

# Patch pixel -> canonical coordinates.
_PATCH_TO_CANON = np.array(
    [[1.0 / PIXELS_PER_F, 0.0, X0 + 0.5 / PIXELS_PER_F], [0.0, 1.0 / PIXELS_PER_F, Y0 + 0.5 / PIXELS_PER_F]]
)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine map `outer` after `inner`."""
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], 1)


def invert(affine: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.invertAffineTransform(affine.astype(np.float64)), np.float64)


def apply(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, np.float64) @ affine[:, :2].T + affine[:, 2]


def _eye_normalised(points: np.ndarray) -> np.ndarray:
    """Stable points in the eye-based similarity frame (F = 1)."""
    a, b = points[topo.RIGHT_EYE_OUTER, :2].astype(np.float64), points[topo.LEFT_EYE_OUTER, :2].astype(np.float64)
    axis = b - a
    f = float(np.linalg.norm(axis)) or 1.0
    c, s = axis / f
    rot = np.array([[c, s], [-s, c]])  # picture -> eye frame
    return ((points[list(STABLE), :2] - (a + b) / 2) @ rot.T) / f


def reference_frame(points: np.ndarray) -> np.ndarray:
    """Canonical positions of STABLE: the clip's median face, (len(STABLE), 2)."""
    return np.median(np.stack([_eye_normalised(p) for p in points]), axis=0)


def canonical_to_frame(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Least-squares affine map from canonical coordinates to one frame's pixels."""
    src = np.concatenate([reference, np.ones((len(reference), 1))], 1)
    dst = points[list(STABLE), :2].astype(np.float64)
    solution, *_ = np.linalg.lstsq(src, dst, rcond=None)
    return np.asarray(solution.T, np.float64)


def patch_to_frame(canon_to_frame: np.ndarray) -> np.ndarray:
    return compose(canon_to_frame, _PATCH_TO_CANON)


def canon_to_patch(xy: np.ndarray) -> np.ndarray:
    return (np.asarray(xy) - [X0, Y0]) * PIXELS_PER_F - 0.5


@dataclass(frozen=True, eq=False)
class MouthLibrary:
    """Every usable frame's lower face in the canonical patch, with its shape; read-only."""

    patches: np.ndarray  # (M, PATCH_H, PATCH_W, 3) uint8
    descriptors: np.ndarray  # (M, 6) float32, DESCRIPTORS order
    ring: np.ndarray  # (M, 3) float32: mean colour where the blend mask fades
    source: np.ndarray  # (M,) int: the clip frame it came from
    successor: np.ndarray  # (M,) int: the entry of the next clip frame, -1 at a cut
    masks: np.ndarray  # (L, PATCH_H, PATCH_W) float32: soft blend masks by bottom
    mask_bottoms: np.ndarray  # (L,) canonical y of each mask's bottom edge

    def __len__(self) -> int:
        return len(self.source)

    def mask_for(self, chin_y: float) -> int:
        """The mask whose bottom clears a chin at canonical `chin_y`."""
        i = int(np.searchsorted(self.mask_bottoms, chin_y + CHIN_MARGIN))
        return min(i, len(self.mask_bottoms) - 1)


def blend_masks(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft masks over the lower face (below the nose, cheek to cheek, down past the chin),
    one per bottom edge: alpha 1 inside, falling smoothly to 0 over FEATHER to the edge."""
    top = float(reference[STABLE.index(SUBNASALE), 1]) + 0.05
    lowest = top + 0.45
    bottoms = np.arange(lowest, Y1 - 0.03, MASK_STEP)
    u = (np.arange(PATCH_W) + 0.5) / PIXELS_PER_F + X0
    v = (np.arange(PATCH_H) + 0.5) / PIXELS_PER_F + Y0
    xx, yy = np.meshgrid(u, v)
    feather_px = FEATHER * PIXELS_PER_F
    masks = []
    for bottom in bottoms:
        cy, half_h = (top + bottom) / 2, (bottom - top) / 2
        # A rounded box (superellipse): straight cheeks, a round chin.
        r = np.abs(xx / MASK_HALF_WIDTH) ** 3 + np.abs((yy - cy) / half_h) ** 3
        hard = (r <= 1.0).astype(np.uint8)
        inside = cv2.distanceTransform(hard, cv2.DIST_L2, 5)
        x = np.clip(inside / feather_px, 0.0, 1.0)
        masks.append((x * x * (3 - 2 * x)).astype(np.float32))
    return np.stack(masks), bottoms.astype(np.float32)


def build_library(
    frames: list[np.ndarray], points: np.ndarray, indices: np.ndarray, reference: np.ndarray
) -> MouthLibrary:
    """The library of the frames `indices` (consecutive clip frames chain as successors)."""
    masks, bottoms = blend_masks(reference)
    mid = masks[len(masks) // 2]
    ring_px = (mid > 0.05) & (mid < 0.6)
    patches = np.empty((len(indices), PATCH_H, PATCH_W, 3), np.uint8)
    descriptors = np.zeros((len(indices), len(DESCRIPTORS)), np.float32)
    ring = np.zeros((len(indices), 3), np.float32)
    for k, i in enumerate(indices):
        to_frame = canonical_to_frame(reference, points[i])
        patches[k] = cv2.warpAffine(
            frames[i], patch_to_frame(to_frame), (PATCH_W, PATCH_H),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )
        canon = apply(invert(to_frame), points[i][:, :2])
        descriptors[k] = _shape(canon, patches[k])
        ring[k] = patches[k][ring_px].mean(0)
    position = {int(i): k for k, i in enumerate(indices)}
    successor = np.array([position.get(int(i) + 1, -1) for i in indices], np.int64)
    return MouthLibrary(patches, descriptors, ring, np.asarray(indices, np.int64), successor, masks, bottoms)


def _shape(canon: np.ndarray, patch: np.ndarray) -> np.ndarray:
    upper, lower = canon[list(topo.LIPS_INNER_UPPER)], canon[list(topo.LIPS_INNER_LOWER)]
    opening = max(float(np.mean(lower[4:7, 1] - upper[4:7, 1])), 0.0)
    width = float(canon[topo.MOUTH_RIGHT_CORNER, 0] - canon[topo.MOUTH_LEFT_CORNER, 0])
    outer_h = float(canon[topo.LOWER_LIP_OUTER_CENTRE, 1] - canon[topo.UPPER_LIP_OUTER_CENTRE, 1])
    rounding = outer_h / max(width, 1e-3)
    teeth = _teeth(patch, upper, lower)
    dark = _dark_opening(patch, canon, width)
    return np.array([opening, width, rounding, teeth, canon[topo.CHIN, 1], dark], np.float32)


def _dark_opening(patch: np.ndarray, canon: np.ndarray, width: float) -> float:
    """How open the mouth looks: the dark area between the outer lips over the mouth's width
    (F units; the landmarks' inner-lip gap misses an opening the teeth fill)."""
    outer = np.concatenate([canon[list(topo.LIPS_OUTER_UPPER)], canon[list(topo.LIPS_OUTER_LOWER)][::-1]])
    polygon = np.round(canon_to_patch(outer) * 4).astype(np.int32)
    lips = np.zeros(patch.shape[:2], np.uint8)
    cv2.fillPoly(lips, [polygon], 1, lineType=cv2.LINE_8, shift=2)
    if not lips.any():
        return 0.0
    luma = patch.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    x0, y0 = np.maximum(polygon.min(0) // 4, 0)
    x1, y1 = polygon.max(0) // 4 + 1
    skin = float(np.percentile(luma[y0:y1, x0:x1], 75))
    dark = int(((luma < 0.45 * skin) & (lips > 0)).sum())
    return dark / (max(width, 1e-3) * PIXELS_PER_F) / PIXELS_PER_F


def _teeth(patch: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> float:
    """Share of the inner mouth that is bright and nearly grey (teeth), 0 when closed."""
    polygon = np.round(canon_to_patch(np.concatenate([upper, lower[::-1]])) * 4).astype(np.int32)
    inner = np.zeros(patch.shape[:2], np.uint8)
    cv2.fillPoly(inner, [polygon], 1, lineType=cv2.LINE_8, shift=2)
    area = int(inner.sum())
    if area < 4:
        return 0.0
    px = patch[inner > 0].astype(np.float32)
    luma = px @ np.array([0.299, 0.587, 0.114], np.float32)
    chroma = px.max(1) - px.min(1)
    skin = float(np.median(patch[: PATCH_H // 3].reshape(-1, 3).astype(np.float32) @ [0.299, 0.587, 0.114]))
    bright = (luma > 0.75 * skin) & (chroma < 0.25 * np.maximum(luma, 1.0))
    return float(bright.sum()) / area
