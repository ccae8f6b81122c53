"""468-point face mesh (and iris centres) from MediaPipe's landmark models.

The mesh model sees a 192x192 crop around the face, rotated so the eyes are level.
One refinement pass re-centres the crop on the first estimate, as MediaPipe does when
tracking, which makes the landmarks steadier for faces the detector boxed loosely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.detection import Detection
from avatar_node.engines.portrait.models import FaceModels


@dataclass(frozen=True)
class FaceMesh:
    """Landmarks in picture pixels; z is depth in the same units (smaller = nearer)."""

    points: np.ndarray  # (468, 3) float32
    presence: float  # probability that the crop holds a face
    irises: np.ndarray  # (2, 3): centre x, y and radius of the subject's right and left iris

    @property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.points[:, :2].min(0)
        x1, y1 = self.points[:, :2].max(0)
        return float(x0), float(y0), float(x1), float(y1)


def _crop_transform(cx: float, cy: float, size: float, angle: float, out: int) -> np.ndarray:
    """Affine map from picture pixels into an out x out crop rotated by `angle` (radians)."""
    scale = out / size
    c, s = math.cos(angle), math.sin(angle)
    # Rotate the picture by -angle about the ROI centre, then scale and centre.
    m = np.array([[c * scale, s * scale, 0.0], [-s * scale, c * scale, 0.0]])
    m[:, 2] = np.array([out / 2, out / 2]) - m[:, :2] @ np.array([cx, cy])
    return m


def _run_mesh(
    models: FaceModels, rgb: np.ndarray, cx: float, cy: float, size: float, angle: float
) -> tuple[np.ndarray, float]:
    m = _crop_transform(cx, cy, size, angle, 192)
    crop = cv2.warpAffine(rgb, m, (192, 192), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    raw, flag = models.face_mesh(crop.astype(np.float32) / 255.0)
    pts = raw.reshape(468, 3).astype(np.float64)
    inv = cv2.invertAffineTransform(m)
    xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
    z = pts[:, 2:3] * (size / 192.0)
    presence = 1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[0], -80, 80))))
    return np.concatenate([xy, z], 1).astype(np.float32), presence


def _eye_angle(right_eye: np.ndarray, left_eye: np.ndarray) -> float:
    """Roll of the face: the angle of the line from the subject's right eye to the left."""
    return math.atan2(float(left_eye[1] - right_eye[1]), float(left_eye[0] - right_eye[0]))


def face_mesh_from_detection(models: FaceModels, rgb: np.ndarray, det: Detection) -> FaceMesh:
    angle = _eye_angle(det.keypoints[0], det.keypoints[1])
    cx, cy = (det.x0 + det.x1) / 2, (det.y0 + det.y1) / 2
    size = det.size * 1.5
    points, _ = _run_mesh(models, rgb, cx, cy, size, angle)
    # Refine: a crop centred on the first estimate, sized from its extent.
    points, presence = track_face_mesh(models, rgb, points)
    irises = np.stack([
        _iris(models, rgb, points, topo.RIGHT_EYE_OUTER, topo.RIGHT_EYE_INNER, flip=False),
        _iris(models, rgb, points, topo.LEFT_EYE_OUTER, topo.LEFT_EYE_INNER, flip=True),
    ])
    return FaceMesh(points, presence, irises)


def track_face_mesh(models: FaceModels, rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, float]:
    """The mesh in `rgb` from a crop around `points` (an estimate of the same face: the first
    pass here, or the previous frame of a video), and the probability that it is a face."""
    angle = _eye_angle(points[topo.RIGHT_EYE_OUTER, :2], points[topo.LEFT_EYE_OUTER, :2])
    c, s = math.cos(-angle), math.sin(-angle)
    rot = points[:, :2] @ np.array([[c, s], [-s, c]])
    lo, hi = rot.min(0), rot.max(0)
    centre_rot = (lo + hi) / 2
    cx, cy = centre_rot @ np.array([[c, -s], [s, c]])
    size = float(max(hi - lo)) * 1.5
    return _run_mesh(models, rgb, float(cx), float(cy), size, angle)


def _iris(
    models: FaceModels, rgb: np.ndarray, points: np.ndarray, outer: int, inner: int, flip: bool
) -> np.ndarray:
    """Iris centre and radius for one eye (the model is trained on the subject's right eye)."""
    a, b = points[outer, :2].astype(np.float64), points[inner, :2].astype(np.float64)
    centre = (a + b) / 2
    width = float(np.linalg.norm(b - a))
    angle = _eye_angle(a, b) if not flip else _eye_angle(b, a)
    m = _crop_transform(float(centre[0]), float(centre[1]), width * 2.3, angle, 64)
    crop = cv2.warpAffine(rgb, m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if flip:
        crop = np.ascontiguousarray(crop[:, ::-1])
    _, iris = models.iris(crop.astype(np.float32) / 255.0)
    iris = iris.reshape(5, 3)[:, :2].astype(np.float64)
    if flip:
        iris[:, 0] = 64 - iris[:, 0]
    inv = cv2.invertAffineTransform(m)
    xy = iris @ inv[:, :2].T + inv[:, 2]
    radius = float(np.mean(np.linalg.norm(xy[1:] - xy[0], axis=1)))
    return np.array([xy[0, 0], xy[0, 1], radius], np.float32)
