"""Preparing a clip avatar: decode, track, drop unusable frames, build the graph and library.

What is kept: the base frames (4:2:0, at the working size; at most MAX_BASE_BYTES, the
calmest stretches first when a long clip has more), each one's canonical map, the mouth
library of every usable frame, and the motion graph. Everything a session needs is
built here, so a session opens in milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from avatar_node.engines.base import AvatarInputError, FaceBox, Identity
from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.clip_decode import CLIP_FPS, decode_clip
from avatar_node.engines.portrait.clip_track import TrackedClip, runs, track_clip
from avatar_node.engines.portrait.detection import FaceDetector
from avatar_node.engines.portrait.models import FaceModels
from avatar_node.engines.portrait.motion_graph import MotionGraph, build_graph, thumbnail
from avatar_node.engines.portrait.mouth_library import (
    JAW,
    OPENING,
    STABLE,
    MouthLibrary,
    build_library,
    canonical_to_frame,
    reference_frame,
)

log = logging.getLogger(__name__)

#: Least usable footage accepted, and what a good avatar wants.
MIN_USABLE_S = 3.0
GOOD_USABLE_S = 20.0
#: A clip that shows a face in less than this share of its frames shows none.
NO_FACE_SHARE = 0.2
#: Frames with a second face beyond this share of those checked: the clip is refused.
MAX_CROWDED_SHARE = 0.3
#: Most memory the base frames may take.
MAX_BASE_BYTES = 320 * 2**20
#: Most mouths kept in the library (about two minutes).
MAX_LIBRARY = 3000
#: Long clips keep their calmest stretches of this length for the base motion.
_CHUNK = 100


@dataclass(frozen=True, eq=False)
class ClipIdentityData:
    """A prepared clip avatar; shared read-only by every stream of it."""

    base: np.ndarray  # (N, h * 3 // 2, w) uint8: base frames, I420
    canon_to_frame: np.ndarray  # (N, 2, 3): canonical face -> base frame pixels
    base_entry: np.ndarray  # (N,) the library entry of each base frame's own mouth
    frame_size: tuple[int, int]  # (w, h) working pixels
    face_extent: tuple[float, float, float, float]  # the face's usual (x0, y0, x1, y1), working pixels
    library: MouthLibrary
    graph: MotionGraph
    usable_s: float
    notes: tuple[str, ...]
    scenes: dict[tuple[int, int, str], Any] = field(default_factory=dict, compare=False)
    scenes_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def base_rgb(self, index: int) -> np.ndarray:
        return np.asarray(cv2.cvtColor(self.base[index], cv2.COLOR_YUV2RGB_I420))


def prepare_clip(data: bytes, models: FaceModels, detector: FaceDetector, engine_name: str) -> Identity:
    clip = decode_clip(data)
    tracked = track_clip(models, detector, clip.frames)
    _check(tracked)
    usable = np.nonzero(tracked.usable)[0][:MAX_LIBRARY]
    usable_s = len(usable) / CLIP_FPS
    reference = reference_frame(tracked.points[usable])
    library = build_library(clip.frames, tracked.points, usable, reference)
    entry_of = {int(i): k for k, i in enumerate(usable)}

    opening = library.descriptors[:, OPENING]
    lo, hi = np.percentile(opening, [5, 95])
    closed = 1.0 - np.clip((opening - lo) / max(hi - lo, 1e-3), 0.0, 1.0)
    face_w = np.linalg.norm(
        tracked.points[usable, topo.LEFT_EYE_OUTER, :2] - tracked.points[usable, topo.RIGHT_EYE_OUTER, :2], axis=1
    )
    f = float(np.median(face_w))
    stable = tracked.points[usable][:, list(STABLE), :2].reshape(len(usable), -1) / f
    speed = np.r_[0.0, np.abs(np.diff(stable, axis=0)).mean(1)]
    stillness = np.exp(-speed / (np.median(speed) + 1e-6))
    calm = 0.6 * closed + 0.4 * stillness

    h, w = clip.frames[0].shape[:2]
    keep = _base_frames(usable, calm, MAX_BASE_BYTES // (w * h * 3 // 2))
    base = np.stack([cv2.cvtColor(clip.frames[i], cv2.COLOR_RGB2YUV_I420) for i in keep])
    position = {int(i): k for k, i in enumerate(keep)}
    successor = np.array([position.get(int(i) + 1, -1) for i in keep], np.int64)
    entries = np.array([entry_of[int(i)] for i in keep], np.int64)
    graph = build_graph(
        np.stack([thumbnail(clip.frames[i]) for i in keep]),
        stable[entries],
        successor,
        calm[entries],
    )
    extent = tracked.points[keep][:, :, :2]
    x0, y0 = np.median(extent.min(1), axis=0)
    x1, y1 = np.median(extent.max(1), axis=0)
    notes: tuple[str, ...] = ()
    if usable_s < GOOD_USABLE_S:
        notes = (
            f"The clip shows a usable face for {usable_s:.1f} s. It works, but a clip of 30-120 s gives "
            "the avatar many more real mouth shapes to speak with and more motion to idle with before "
            "any of it is seen again.",
        )
        log.warning("clip avatar: %s", notes[0])
    identity_data = ClipIdentityData(
        base=base,
        canon_to_frame=np.stack([canonical_to_frame(reference, tracked.points[i]) for i in keep]),
        base_entry=entries,
        frame_size=(w, h),
        face_extent=(float(x0), float(y0), float(x1), float(y1)),
        library=library,
        graph=graph,
        usable_s=usable_s,
        notes=notes,
    )
    box = FaceBox(
        float(x0 / clip.scale), float(y0 / clip.scale), float((x1 - x0) / clip.scale), float((y1 - y0) / clip.scale)
    )
    return Identity(
        avatar_id=f"{hashlib.sha256(data).hexdigest()[:32]}-{engine_name}",
        engine=engine_name,
        image_width=clip.width,
        image_height=clip.height,
        face=box,
        faces_found=1,
        data=identity_data,
        notes=notes,
    )


def chin_depth(data: ClipIdentityData, entry: int) -> float:
    return float(data.library.descriptors[entry, JAW])


def _check(tracked: TrackedClip) -> None:
    usable_s = float(tracked.usable.sum()) / CLIP_FPS
    if usable_s < MIN_USABLE_S and tracked.frames_with_face < NO_FACE_SHARE * len(tracked.usable):
        seen = tracked.frames_with_face / CLIP_FPS
        raise AvatarInputError(
            f"No face was found in the avatar clip (a face showed in {seen:.1f} s of it at most). Record "
            "yourself facing the camera, in even light, with your face at least about 100 pixels wide.",
            "NO_FACE",
        )
    if tracked.frames_with_several_faces > MAX_CROWDED_SHARE * max(tracked.frames_checked_for_faces, 1):
        raise AvatarInputError(
            "The avatar clip shows more than one face for much of its length. Record it with only "
            "you in the picture.",
            "SEVERAL_FACES",
        )
    if usable_s < MIN_USABLE_S:
        worst = max(tracked.dropped, key=lambda r: tracked.dropped[r])
        raise AvatarInputError(
            f"Only {usable_s:.1f} s of the avatar clip shows a face looking at the camera (most frames "
            f"dropped: {worst}); record at least {MIN_USABLE_S:.0f} s, ideally 30 s or more, facing the "
            "camera, holding fairly still, in even light.",
            "TOO_LITTLE_FACE",
        )


def _base_frames(usable: np.ndarray, calm: np.ndarray, most: int) -> np.ndarray:
    """The usable frames to keep as base motion: all of them, or the calmest stretches."""
    if len(usable) <= most:
        return usable
    chunks: list[tuple[float, np.ndarray]] = []
    pos = {int(i): k for k, i in enumerate(usable)}
    for start, end in runs(np.isin(np.arange(int(usable[-1]) + 1), usable)):
        for a in range(start, end, _CHUNK):
            frames = np.arange(a, min(a + _CHUNK, end))
            chunks.append((float(np.mean([calm[pos[int(i)]] for i in frames])), frames))
    chunks.sort(key=lambda c: -c[0])
    kept: list[np.ndarray] = []
    total = 0
    for _, frames in chunks:
        if total + len(frames) > most:
            continue
        kept.append(frames)
        total += len(frames)
    return np.sort(np.concatenate(kept))
