"""The face mesh on every frame of a clip, smoothed over time, and which frames can be used.

The mesh follows the face from frame to frame (each crop placed from the previous mesh,
as MediaPipe tracks), so the detector runs only every DETECT_EVERY frames: to find the
face again when it is lost, and to notice a second face. A frame is dropped when the face
is lost (or hidden: the mesh model's presence falls), turned away, smeared by motion
blur, moving too fast to track, or shares the picture with another face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.detection import Detection, FaceDetector
from avatar_node.engines.portrait.landmarks import face_mesh_from_detection, track_face_mesh
from avatar_node.engines.portrait.models import FaceModels

DETECT_EVERY = 5
#: Below this mesh presence the face is lost or hidden.
MIN_PRESENCE = 0.6
#: Smallest face the mesh follows (detector box side, working pixels).
MIN_FACE_PIXELS = 24
#: A second face at least this share of the main one's size makes a frame unusable.
SECOND_FACE_SHARE = 0.45
#: Head turned further than this (radians, yaw or pitch) is not looking at the camera.
MAX_TURN = 0.5
#: Sharpness below this share of the clip's median is motion blur.
MIN_SHARPNESS_SHARE = 0.35
#: A face moving more than this (face widths per frame) is too fast for the mesh.
MAX_SPEED = 0.12
#: Temporal smoothing of the landmarks (frames): takes out the mesh's jitter.
SMOOTH_SIGMA = 0.8

DROP_REASONS = ("no face", "turned away", "motion blur", "too fast", "second face")


@dataclass(frozen=True)
class TrackedClip:
    """Landmarks for every frame (NaN where none), smoothed within each run of usable frames."""

    points: np.ndarray  # (N, 468, 3) float32, working pixels
    usable: np.ndarray  # (N,) bool
    dropped: dict[str, int]  # frames dropped, by reason
    frames_with_face: int
    frames_with_several_faces: int
    frames_checked_for_faces: int


def track_clip(models: FaceModels, detector: FaceDetector, frames: list[np.ndarray]) -> TrackedClip:
    n = len(frames)
    points = np.full((n, 468, 3), np.nan, np.float32)
    reason: list[str | None] = [None] * n
    sharp = np.zeros(n)
    several = checked = 0
    prev: np.ndarray | None = None
    crowded_until = -1
    for i, rgb in enumerate(frames):
        dets: list[Detection] | None = None
        if prev is None and i % DETECT_EVERY:
            reason[i] = "no face"  # a lost face is looked for again at the next look
            continue
        if i % DETECT_EVERY == 0:
            dets = [d for d in detector.detect(rgb, small_faces=False) if d.size >= MIN_FACE_PIXELS]
            checked += 1
            if len(dets) > 1 and dets[1].size >= SECOND_FACE_SHARE * dets[0].size:
                several += 1
                crowded_until = i + DETECT_EVERY  # until the next look
        mesh: np.ndarray | None = None
        if prev is not None:
            mesh, presence = track_face_mesh(models, rgb, prev)
            if presence < MIN_PRESENCE:
                mesh = None
        if mesh is None and dets:
            found = face_mesh_from_detection(models, rgb, dets[0])
            mesh = found.points if found.presence >= MIN_PRESENCE else None
        if mesh is None:
            reason[i] = "no face"
            prev = None
            continue
        points[i] = mesh
        face_w = float(np.linalg.norm(mesh[topo.LEFT_EYE_OUTER, :2] - mesh[topo.RIGHT_EYE_OUTER, :2]))
        if prev is not None and np.median(np.linalg.norm(mesh[:, :2] - prev[:, :2], axis=1)) > MAX_SPEED * face_w:
            reason[i] = "too fast"
        prev = mesh
        sharp[i] = _sharpness(rgb, mesh)
        if i < crowded_until:
            reason[i] = "second face"
        elif reason[i] is None and _turned_away(mesh):
            reason[i] = "turned away"
    with_face = ~np.isnan(points[:, 0, 0])
    if with_face.any():
        floor = MIN_SHARPNESS_SHARE * float(np.median(sharp[with_face]))
        for i in np.nonzero(with_face & (sharp < floor))[0].tolist():
            reason[i] = reason[i] or "motion blur"
    usable = np.array([r is None for r in reason])
    dropped = {r: sum(1 for x in reason if x == r) for r in DROP_REASONS}
    return TrackedClip(
        _smoothed(points, usable), usable, dropped, int(with_face.sum()), several, checked
    )


def _turned_away(mesh: np.ndarray) -> bool:
    """Yaw from the cheeks' depth difference, pitch from forehead-to-chin depth."""
    r, left = mesh[234], mesh[454]
    yaw = math.atan2(float(left[2] - r[2]), float(left[0] - r[0]))
    top, chin = mesh[topo.FOREHEAD], mesh[topo.CHIN]
    pitch = math.atan2(float(chin[2] - top[2]), float(chin[1] - top[1]))
    return abs(yaw) > MAX_TURN or abs(pitch) > MAX_TURN


def _sharpness(rgb: np.ndarray, mesh: np.ndarray) -> float:
    """Variance of the Laplacian over the face: falls sharply with motion blur."""
    x0, y0 = np.maximum(mesh[:, :2].min(0).astype(int), 0)
    x1, y1 = mesh[:, :2].max(0).astype(int)
    crop = rgb[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def runs(usable: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each stretch of consecutive usable frames."""
    out: list[tuple[int, int]] = []
    start = None
    for i, ok in enumerate(list(usable) + [False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            out.append((start, i))
            start = None
    return out


def _smoothed(points: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Gaussian smoothing along time inside each usable run (never across a cut)."""
    out = points.copy()
    radius = max(1, int(math.ceil(3 * SMOOTH_SIGMA)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SMOOTH_SIGMA) ** 2)
    taps /= taps.sum()
    for start, end in runs(usable):
        if end - start < 3:
            continue
        track = points[start:end].reshape(end - start, -1).astype(np.float64)
        padded = np.pad(track, ((radius, radius), (0, 0)), mode="reflect")
        smooth = sum(w * padded[k : k + end - start] for k, w in enumerate(taps))
        out[start:end] = np.asarray(smooth, np.float32).reshape(end - start, 468, 3)
    return out
