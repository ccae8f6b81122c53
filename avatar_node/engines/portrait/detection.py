"""Face boxes from MediaPipe's BlazeFace detectors (short and full range).

The detectors see a square, letterboxed copy of the picture. Small faces in large
pictures are also searched for in overlapping tiles, so a 120 px face on a 4K canvas
is found as well as a face that fills the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.portrait.models import FaceModels, TfliteModel


@dataclass(frozen=True)
class Detection:
    """A face box in picture pixels with BlazeFace's six keypoints.

    Keypoints: right eye, left eye (the subject's), nose tip, mouth, right ear, left ear.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    keypoints: np.ndarray  # (6, 2) picture pixels

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    @property
    def size(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)


def _anchors(input_size: int, strides: list[int], per_location: list[int]) -> np.ndarray:
    """SSD anchor centres (normalised) for BlazeFace: fixed unit size, offset 0.5."""
    centres = []
    for stride, count in zip(strides, per_location):
        grid = input_size // stride
        ys, xs = np.mgrid[0:grid, 0:grid]
        c = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(c, count, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class _DetectorSpec:
    model: TfliteModel
    anchors: np.ndarray
    scale: float
    min_score: float


class FaceDetector:
    """Runs both BlazeFace variants and merges their boxes."""

    def __init__(self, models: FaceModels) -> None:
        self._specs = [
            # Short range: 128 px input, strides 8 (2 anchors/cell) and 16 (6 anchors/cell).
            _DetectorSpec(models.short_range, _anchors(128, [8, 16], [2, 6]), 128.0, 0.5),
            # Full range: 192 px input, stride 4, one anchor per cell.
            _DetectorSpec(models.full_range, _anchors(192, [4], [1]), 192.0, 0.6),
        ]

    def detect(self, rgb: np.ndarray, small_faces: bool = True) -> list[Detection]:
        """All faces in an RGB picture, largest first. `small_faces=False` skips the tiles
        (faces under ~1/8 of the picture may be missed; a video's speaker is not that small)."""
        h, w = rgb.shape[:2]
        found = self._detect_square(rgb, 0, 0, max(h, w))
        # Faces under ~1/8 of the picture are at the limit of the whole-picture pass:
        # look again in overlapping tiles.
        if small_faces and max(h, w) >= 512:
            tile = max(256, int(max(h, w) / 3))
            step = max(1, int(tile * 0.66))
            for ty in range(0, max(1, h - tile // 3), step):
                for tx in range(0, max(1, w - tile // 3), step):
                    found += self._detect_square(rgb, tx, ty, tile)
        merged = _non_max_suppression(found, 0.3)
        return sorted(merged, key=lambda d: d.area, reverse=True)

    def _detect_square(self, rgb: np.ndarray, x: int, y: int, side: int) -> list[Detection]:
        h, w = rgb.shape[:2]
        crop = rgb[y : min(h, y + side), x : min(w, x + side)]
        square = np.zeros((side, side, 3), np.uint8)
        square[: crop.shape[0], : crop.shape[1]] = crop
        results: list[Detection] = []
        for spec in self._specs:
            size = spec.model.input_size[0]
            tensor = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
            tensor = tensor.astype(np.float32) / 127.5 - 1.0
            regressors, scores = spec.model(tensor)
            scores = 1.0 / (1.0 + np.exp(-np.clip(scores[:, 0], -80.0, 80.0)))
            keep = np.nonzero(scores >= spec.min_score)[0]
            for i in keep:
                r = regressors[i]
                a = spec.anchors[i]
                cx, cy = r[0] / spec.scale + a[0], r[1] / spec.scale + a[1]
                bw, bh = r[2] / spec.scale, r[3] / spec.scale
                kps = r[4:16].reshape(6, 2) / spec.scale + a
                box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]) * side
                box += [x, y, x, y]
                # Boxes cut by the tile edge are partial faces: the whole-picture pass
                # or a neighbouring tile sees them whole.
                if side < max(h, w) and _touches_inner_edge(box, x, y, side, w, h):
                    continue
                x0, y0, x1, y1 = (float(v) for v in box)
                results.append(Detection(x0, y0, x1, y1, float(scores[i]), kps * side + [x, y]))
        return results


def _touches_inner_edge(box: np.ndarray, x: int, y: int, side: int, w: int, h: int) -> bool:
    margin = side * 0.02
    return bool(
        (box[0] < x + margin and x > 0)
        or (box[1] < y + margin and y > 0)
        or (box[2] > x + side - margin and x + side < w)
        or (box[3] > y + side - margin and y + side < h)
    )


def _iou(a: Detection, b: Detection) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def _non_max_suppression(detections: list[Detection], threshold: float) -> list[Detection]:
    """Weighted NMS: overlapping boxes are averaged by score, as MediaPipe does."""
    remaining = sorted(detections, key=lambda d: d.score, reverse=True)
    merged: list[Detection] = []
    while remaining:
        best = remaining[0]
        group = [d for d in remaining if _iou(best, d) >= threshold]
        remaining = [d for d in remaining if _iou(best, d) < threshold]
        weights = np.array([d.score for d in group])
        weights /= weights.sum()
        box = np.sum([w * np.array([d.x0, d.y0, d.x1, d.y1]) for w, d in zip(weights, group)], 0)
        kps = np.sum([w * d.keypoints for w, d in zip(weights, group)], 0)
        x0, y0, x1, y1 = (float(v) for v in box)
        merged.append(Detection(x0, y0, x1, y1, best.score, kps))
    return merged
