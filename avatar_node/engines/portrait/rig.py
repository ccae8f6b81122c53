"""A face rig in canvas pixels: control vectors on the mesh and a dense warp field.

Built once per stream (at `open`, from the identity's cached landmarks), a rig holds:
- the vertices: the 468 mesh points, the two iris centres, and two rings around the
  face (the inner ring follows the head partly, the outer ring and the ROI border are
  pinned) so the warp fades to nothing before the background;
- a Delaunay triangulation of them, rasterised once into per-sample vertex ids and
  barycentric weights;
- one displacement vector per vertex for each control: head pose (yaw, pitch, roll and
  shifts, with parallax from the mesh's depth) and local shapes (jaw, lips, brows,
  gaze); each control's dense field at half resolution, kept only over the box where it
  is not zero.

Per frame the forward field is a weighted sum of the controls' fields (plain numpy
adds: a BLAS call on products this small costs more in thread wake-ups than in work),
inverted by fixed-point steps, brought to full resolution, adjusted where the eyelids
slide (see `eyelids`), and the frame is one `cv2.remap` of the ROI.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo

#: Head controls: radians (small) and face units (F = outer eye-corner distance).
HEAD_CONTROLS = ("yaw", "pitch", "roll", "shift_x", "shift_y")
#: Local controls, all in face units except gaze (iris radii).
LOCAL_CONTROLS = (
    "jaw",  # lower lip and chin down (+); 1 = one F of extra inner-lip gap
    "upper_lip",  # upper lip up (+), baring the upper teeth
    "lower_lip",  # lower lip up (+) towards the upper teeth (f, v)
    "width",  # mouth corners out (+, spread) or in (-, rounded)
    "pucker",  # lips pushed out and the opening rounded (o, u, w)
    "smile",  # corners up and out, cheeks up
    "press",  # lips pressed together and thinned (m, b, p)
    "brows",  # brows up
    "gaze_x",  # iris shift, iris radii
    "gaze_y",
)
HEAD_INDEX = {name: i for i, name in enumerate(HEAD_CONTROLS)}
LOCAL_INDEX = {name: i for i, name in enumerate(LOCAL_CONTROLS)}

_IRIS_RIGHT = 468
_IRIS_LEFT = 469


@dataclass(frozen=True)
class MouthFrame:
    """Where the inner mouth is in one rendered frame (canvas pixels)."""

    inner_upper: np.ndarray  # (11, 2) corner to corner
    inner_lower: np.ndarray  # (11, 2)
    gap: float  # inner-lip gap at the centre, pixels


@dataclass(frozen=True)
class _Grid:
    """A sampling grid over a canvas box: sample (j, i) sits at canvas
    (x0 + (i + 0.5) * step - 0.5, y0 + (j + 0.5) * step - 0.5)."""

    x0: int
    y0: int
    width: int  # samples
    height: int
    step: int

    def to_samples(self, xy: np.ndarray) -> np.ndarray:
        return (xy - [self.x0, self.y0] + 0.5) / self.step - 0.5

    def sample_index_grid(self) -> np.ndarray:
        return _index_grid(self.width, self.height)


class FaceRig:
    def __init__(self, points: np.ndarray, irises: np.ndarray, canvas_size: tuple[int, int]):
        """points: (468, 3) canvas pixels (z in pixels); irises: (2, 3) x, y, radius."""
        width, height = canvas_size
        mesh = points[:, :2].astype(np.float64)
        self.depth = points[:, 2].astype(np.float64)
        self.iris_radius = float(np.mean(irises[:, 2]))
        self.irises = irises[:, :2].astype(np.float64)

        right_eye = mesh[[topo.RIGHT_EYE_OUTER, topo.RIGHT_EYE_INNER]].mean(0)
        left_eye = mesh[[topo.LEFT_EYE_OUTER, topo.LEFT_EYE_INNER]].mean(0)
        self.unit = float(np.linalg.norm(mesh[topo.LEFT_EYE_OUTER] - mesh[topo.RIGHT_EYE_OUTER]))
        ex = (left_eye - right_eye) / np.linalg.norm(left_eye - right_eye)
        ey = np.array([-ex[1], ex[0]])  # points down the face
        self.axes = np.stack([ex, ey])
        self.mouth_centre = mesh[[78, 308, 13, 14]].mean(0)

        oval = mesh[list(topo.FACE_OVAL)]
        centre = oval.mean(0)
        inner_ring = centre + 1.25 * (oval - centre)
        outer_ring = centre + 1.7 * (oval - centre)
        x0, y0 = np.floor(np.maximum(outer_ring.min(0), 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(outer_ring.max(0), [width - 1, height - 1])).astype(int)
        self.roi = (int(x0), int(y0), int(x1) + 1, int(y1) + 1)
        border = _rect_points(self.roi, 8)
        outer_ring = np.clip(outer_ring, [x0, y0], [x1, y1])
        inner_ring = np.clip(inner_ring, [x0, y0], [x1, y1])
        self.vertices = np.concatenate([mesh, self.irises, inner_ring, outer_ring, border])
        n_mesh, n_inner = 470, len(inner_ring)
        self._inner_ring = np.arange(n_mesh, n_mesh + n_inner)
        self._pinned = np.arange(n_mesh + n_inner, len(self.vertices))
        self._oval = np.array(topo.FACE_OVAL)

        self.head_basis = self._head_basis(mesh)
        self.local_basis = self._local_basis(mesh, irises)
        triangles = _delaunay(self.vertices)

        rw, rh = self.roi[2] - self.roi[0], self.roi[3] - self.roi[1]
        # Field resolution follows the face's size: a face that fills the frame is as
        # smooth per pixel as a small one is per half pixel.
        step = int(min(max(round(self.unit / 70.0), 2), 4))
        self._grid = _Grid(self.roi[0], self.roi[1], -(-rw // step), -(-rh // step), step)
        tri, bary = _rasterise(self._grid, self.vertices, triangles)
        # Each control's field is kept only over the box where it is not zero.
        self._fields = [
            _sparse_field(_field(tri, bary, b, self._grid)) for b in np.concatenate([self.head_basis, self.local_basis])
        ]
        self._samples = self._grid.sample_index_grid()
        # Where the field is steep (the jaw and lips: a wide-open mouth moves the lower lip
        # a fifth of F within a few pixels) the inversion needs extra steps; elsewhere
        # (head motion, brows, gaze) one is enough.
        lips = self._grid.to_samples(mesh[list(topo.LIPS_OUTER_UPPER) + list(topo.LIPS_OUTER_LOWER)])
        grow = 0.3 * self.unit / step
        (c0, r0), (c1, r1) = np.floor(lips.min(0) - grow).astype(int), np.ceil(lips.max(0) + grow).astype(int)
        self._steep = (slice(max(r0, 0), max(r1, 0)), slice(max(c0, 0), max(c1, 0)))
        self._canvas_grid = _index_grid(rw, rh) + np.array([x0, y0], np.float32)

    # -- set-up --------------------------------------------------------------------------

    def _face_coords(self, p: np.ndarray) -> np.ndarray:
        """(u, v) of points relative to the mouth centre, in face units."""
        return ((p - self.mouth_centre) @ self.axes.T) / self.unit

    def _local_basis(self, mesh: np.ndarray, irises: np.ndarray) -> np.ndarray:
        n = len(self.vertices)
        basis = np.zeros((len(LOCAL_CONTROLS), n, 2))
        ex, ey = self.axes
        F = self.unit
        uv = self._face_coords(mesh)
        u, v = uv[:, 0], uv[:, 1]
        ids = np.arange(len(mesh))
        # Half the mouth's width on each side of its centre (they differ on a turned face),
        # per vertex: the side the vertex is on.
        corners_u = self._face_coords(mesh[[topo.MOUTH_LEFT_CORNER, topo.MOUTH_RIGHT_CORNER]])[:, 0]
        mouth_half = np.where(u < 0, max(abs(float(corners_u[0])), 0.12), max(abs(float(corners_u[1])), 0.12))
        inner_upper = list(topo.LIPS_INNER_UPPER[1:-1])
        inner_lower = list(topo.LIPS_INNER_LOWER[1:-1])
        outer_upper = list(topo.LIPS_OUTER_UPPER[1:-1])
        outer_lower = list(topo.LIPS_OUTER_LOWER[1:-1])
        upper_lip = inner_upper + outer_upper
        lower_lip = inner_lower + outer_lower
        corners = [61, 291, 78, 308]
        lips = set(upper_lip) | set(lower_lip) | set(corners)
        not_lips = ~np.isin(ids, list(lips))
        # Distance (face units) above the upper lip's outer contour and below the lower's.
        upper_v = np.interp(u, *_sorted_uv(uv[list(topo.LIPS_OUTER_UPPER)]))
        lower_v = np.interp(u, *_sorted_uv(uv[list(topo.LIPS_OUTER_LOWER)]))
        side = np.clip(1 - (np.abs(u) / 1.0) ** 2, 0, 1) ** 0.8
        beside = np.exp(-np.maximum(np.abs(u) - mouth_half, 0) / 0.18)

        def put(name: str, values: np.ndarray, direction: np.ndarray) -> None:
            basis[LOCAL_INDEX[name], : len(mesh)] += np.outer(values, direction) * F

        # Jaw: the lower lip, chin and jaw drop (the jaw hinges near the ears, so the drop
        # fades sideways); the upper lip lifts a little; lips keep their thickness.
        below = 1 / (1 + np.exp(-(v - 0.03) / 0.03))
        jaw = 0.85 * below * side
        # Along the lips the opening tapers to the corners (a lens, not a slot).
        # Both lips move as the corners do near the corners, so the gap closes there.
        along = np.clip(1.0 - (u / mouth_half) ** 2, 0.0, 1.0)
        corner_drop = 0.3
        jaw[lower_lip] = corner_drop + (0.85 - corner_drop) * along[lower_lip]
        jaw[upper_lip] = corner_drop - (corner_drop + 0.15) * along[upper_lip]
        jaw[corners] = corner_drop
        cheek = (v > -0.35) & (v < 0.03) & not_lips
        jaw[cheek] += 0.15 * np.exp(-((np.abs(u[cheek]) - mouth_half[cheek]) / 0.25) ** 2)
        put("jaw", jaw, ey)

        # Upper lip up; the skin above it follows part way, fading towards the nose.
        above = np.clip(upper_v - v, 0, None)
        raise_up = np.where(not_lips & (v < upper_v), np.exp(-((above / 0.12) ** 2)) * 0.6 * beside, 0.0)
        raise_up[upper_lip] = 1.0
        raise_up[[61, 291, 78, 308]] = 0.35
        put("upper_lip", -raise_up, ey)

        # Lower lip up towards the upper teeth (lip bite); the skin below follows a little.
        under = np.clip(v - lower_v, 0, None)
        lift = np.where(not_lips & (v > lower_v), np.exp(-((under / 0.15) ** 2)) * 0.35 * beside, 0.0)
        lift[lower_lip] = 1.0
        lift[inner_lower] = 1.1  # the inner edge rolls up under the teeth
        lift[corners] = 0.2
        put("lower_lip", -lift, ey)

        # Width: corners out (spread) or in (rounded); lips and the skin around follow.
        near_mouth = np.exp(-((v / 0.28) ** 2)) * np.exp(-np.maximum(np.abs(u) - mouth_half, 0) / 0.2)
        put("width", np.clip(u / mouth_half, -1.2, 1.2) * near_mouth, ex)

        # Pucker: the lips push out (both contours move away from the mouth line, the
        # lips look fuller) and the inner corners close in, so the opening is round.
        out = np.zeros(len(mesh))
        out[outer_upper] = -1.0
        out[outer_lower] = 1.0
        out[inner_upper] = -0.25
        out[inner_lower] = 0.25
        put("pucker", out * np.exp(-((u / (mouth_half * 1.1)) ** 2)), ey)
        inward = np.zeros(len(mesh))
        rel = np.clip(u / mouth_half, -1, 1)
        inward[inner_upper + inner_lower + [78, 308]] = -rel[inner_upper + inner_lower + [78, 308]] * 1.6
        inward[outer_upper + outer_lower + [61, 291]] = -rel[outer_upper + outer_lower + [61, 291]] * 0.5
        put("pucker", inward * np.abs(rel) ** 0.5, ex)

        # Smile: corners up and out, cheeks lifted.
        corner_pull = np.exp(-(((np.abs(u) - mouth_half) / 0.28) ** 2) - ((v / 0.3) ** 2))
        put("smile", corner_pull * np.sign(u) * 0.45, ex)
        put("smile", -corner_pull, ey)
        cheeks = np.exp(-(((np.abs(u) - mouth_half * 1.3) / 0.35) ** 2) - (((v + 0.35) / 0.3) ** 2))
        put("smile", -0.35 * cheeks, ey)

        # Press: the outer lip contours move towards the mouth line (thinner lips).
        press = np.zeros(len(mesh))
        press[outer_upper] = 1.0
        press[outer_lower] = -1.0
        put("press", press * np.exp(-((u / (mouth_half * 1.2)) ** 2)), ey)

        # Brows up; the forehead above follows.
        brows = np.zeros(len(mesh))
        brows[list(topo.RIGHT_BROW) + list(topo.LEFT_BROW)] = 1.0
        eye_line = self._face_coords(np.stack([mesh[topo.RIGHT_EYE_OUTER], mesh[topo.LEFT_EYE_OUTER]]))[:, 1].mean()
        brow_v = self._face_coords(mesh[list(topo.RIGHT_BROW)])[:, 1].mean()
        forehead = v < brow_v
        brows[forehead] = np.maximum(brows[forehead], 0.6)
        between = (v >= brow_v) & (v < eye_line - 0.08)
        brows[between] = np.maximum(brows[between], 0.35)
        put("brows", -brows, ey)

        # Gaze: the iris centres slide inside the fixed eye contour.
        r = float(np.mean(irises[:, 2]))
        basis[LOCAL_INDEX["gaze_x"], [_IRIS_RIGHT, _IRIS_LEFT]] = ex * r * 0.45
        basis[LOCAL_INDEX["gaze_y"], [_IRIS_RIGHT, _IRIS_LEFT]] = ey * r * 0.3

        # Inner ring: 60 % of the motion of the nearest oval vertex (a jaw drop stretches
        # the neck edge instead of tearing it); the outer ring and border are pinned.
        basis[:, self._inner_ring] = 0.6 * basis[:, self._oval]
        basis[:, self._pinned] = 0.0
        return basis.astype(np.float32)

    def _head_basis(self, mesh: np.ndarray) -> np.ndarray:
        """Head pose on the face, with the mesh's depth giving parallax for yaw and pitch."""
        n = len(self.vertices)
        basis = np.zeros((len(HEAD_CONTROLS), n, 2))
        ex, ey = self.axes
        F = self.unit
        head = np.concatenate([mesh, self.irises])
        z = np.concatenate([self.depth, self.depth[[topo.RIGHT_EYE_INNER, topo.LEFT_EYE_INNER]]])
        z_rel = z - np.median(self.depth[self._oval])
        pivot = mesh[topo.CHIN] + ey * F * 0.6
        rel = head - pivot
        fields = {
            "yaw": np.outer(-z_rel, ex),
            "pitch": np.outer(-z_rel, ey) * 0.6 + np.outer(np.full(len(head), 0.08 * F), ey),
            "roll": np.stack([-rel[:, 1], rel[:, 0]], 1),
            "shift_x": np.tile(ex * F, (len(head), 1)),
            "shift_y": np.tile(ey * F, (len(head), 1)),
        }
        for name, field in fields.items():
            basis[HEAD_INDEX[name], : len(head)] = field
        basis[:, self._inner_ring] = 0.6 * basis[:, self._oval]
        basis[:, self._pinned] = 0.0
        return basis.astype(np.float32)

    # -- per frame -----------------------------------------------------------------------

    def vertex_offsets(self, head: np.ndarray, local: np.ndarray) -> np.ndarray:
        """(n_vertices, 2) displacement of every vertex for these control values."""
        out = np.zeros((len(self.vertices), 2), np.float32)
        _accumulate(out, self.head_basis, head)
        _accumulate(out, self.local_basis, local)
        return out

    def local_offsets(self, local: np.ndarray) -> np.ndarray:
        out = np.zeros((len(self.vertices), 2), np.float32)
        _accumulate(out, self.local_basis, local)
        return out

    def warp(
        self,
        canvas: np.ndarray,
        out: np.ndarray,
        head: np.ndarray,
        local: np.ndarray,
        slide: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        """Write into `out` (same shape as canvas) the ROI of `canvas` moved by the controls.

        `slide`, if given, edits the source positions in place before sampling (the
        eyelids use it).
        """
        x0, y0, x1, y1 = self.roi
        g = self._grid
        fwd = np.zeros((g.height, g.width, 2), np.float32)
        for (sl, field), c in zip(self._fields, (*head, *local)):
            if c != 0.0 and field is not None:
                cv2.scaleAdd(field, float(c), fwd[sl], dst=fwd[sl])
        back = _invert(fwd, self._samples, g.step, self._steep)
        full = cv2.resize(back, (g.width * g.step, g.height * g.step), interpolation=cv2.INTER_LINEAR)
        src = self._canvas_grid - full[: y1 - y0, : x1 - x0]
        if slide is not None:
            slide(src)
        # Fixed-point maps (what remap uses inside anyway) make the big remap cheaper.
        map_xy, map_frac = cv2.convertMaps(src, None, cv2.CV_16SC2)  # type: ignore[call-overload]
        out[y0:y1, x0:x1] = cv2.remap(canvas, map_xy, map_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def mouth_frame(self, offsets: np.ndarray) -> MouthFrame:
        upper = self.vertices[list(topo.LIPS_INNER_UPPER)] + offsets[list(topo.LIPS_INNER_UPPER)]
        lower = self.vertices[list(topo.LIPS_INNER_LOWER)] + offsets[list(topo.LIPS_INNER_LOWER)]
        gap = float((lower[5] - upper[5]) @ self.axes[1])
        return MouthFrame(upper, lower, gap)

    def neutral_gap(self) -> float:
        """Inner-lip gap in the photo, in face units (> 0 when the photo's mouth is open)."""
        upper = self.vertices[topo.UPPER_LIP_INNER_CENTRE]
        lower = self.vertices[topo.LOWER_LIP_INNER_CENTRE]
        return float((lower - upper) @ self.axes[1]) / self.unit

    def mouth_box(self, margin: float = 0.25) -> tuple[int, int, int, int]:
        """A box around the lips (canvas pixels), grown by `margin` face units downwards
        and a fraction of that sideways, so an open jaw stays inside it."""
        lips = self.vertices[list(topo.LIPS_OUTER_UPPER) + list(topo.LIPS_OUTER_LOWER)]
        x0, y0 = lips.min(0)
        x1, y1 = lips.max(0)
        pad = self.unit * margin
        return (
            int(math.floor(x0 - pad * 0.3)),
            int(math.floor(y0 - pad * 0.3)),
            int(math.ceil(x1 + pad * 0.3)),
            int(math.ceil(y1 + pad)),
        )

    def eye_boxes(self) -> list[tuple[int, int, int, int]]:
        """Boxes around the subject's right and left eye (canvas pixels)."""
        boxes = []
        for upper, lower in ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER), (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER)):
            boxes.append(_box(self.vertices[list(upper) + list(lower)], self.unit * 0.12))
        return boxes


def _accumulate(out: np.ndarray, basis: np.ndarray, weights: np.ndarray) -> None:
    # A loop of scaled adds: a BLAS call on these tiny products would cost more in
    # thread wake-ups than the arithmetic.
    for row, c in zip(basis, weights):
        if c != 0.0:
            out += np.float32(c) * row


def _invert(fwd: np.ndarray, samples: np.ndarray, step: int, steep: tuple[slice, slice]) -> np.ndarray:
    """Backward field of a forward displacement field (both in canvas pixels) by
    fixed-point steps, back(p) = fwd(p - back(p)): one over the whole grid, two more
    where the field is steep."""
    # (OpenCV's type stubs lack the one-map form of remap used here.)
    back = cv2.remap(fwd, samples - fwd / step, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]
    where = samples[steep]
    for _ in range(2):
        back[steep] = cv2.remap(  # type: ignore[call-overload]
            fwd, where - back[steep] / step, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    return back


def _field(tri: np.ndarray, bary: np.ndarray, basis: np.ndarray, grid: _Grid) -> np.ndarray:
    """Dense (h, w, 2) field of one control from its per-vertex vectors."""
    field = (bary[:, :, None] * basis[tri]).sum(1)
    return np.ascontiguousarray(field.reshape(grid.height, grid.width, 2), dtype=np.float32)


def _sparse_field(field: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray | None]:
    """The field cut to the box where it is not zero."""
    nonzero = np.any(np.abs(field) > 1e-4, axis=2)
    if not nonzero.any():
        return (slice(0, 0), slice(0, 0)), None
    rows = np.flatnonzero(nonzero.any(1))
    cols = np.flatnonzero(nonzero.any(0))
    sl = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return sl, np.ascontiguousarray(field[sl])


def _rasterise(grid: _Grid, vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of the grid: three vertex ids and barycentric weights."""
    local = grid.to_samples(vertices)
    tri_map = np.full((grid.height, grid.width), -1, np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(tri_map, np.round(local[tri] * 16).astype(np.int32), t, cv2.LINE_8, 4)
    ys, xs = np.mgrid[0 : grid.height, 0 : grid.width]
    valid = tri_map >= 0
    tri = triangles[np.where(valid, tri_map, 0)]  # (h, w, 3)
    a, b, c = local[tri[..., 0]], local[tri[..., 1]], local[tri[..., 2]]
    p = np.stack([xs, ys], -1).astype(np.float64)
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[..., 0] * v1[..., 1] - v1[..., 0] * v0[..., 1]
    den = np.where(np.abs(den) < 1e-9, 1e-9, den)
    wb = (v2[..., 0] * v1[..., 1] - v1[..., 0] * v2[..., 1]) / den
    wc = (v0[..., 0] * v2[..., 1] - v2[..., 0] * v0[..., 1]) / den
    bary = np.clip(np.stack([1 - wb - wc, wb, wc], -1), 0, 1)
    bary /= np.maximum(bary.sum(-1, keepdims=True), 1e-9)
    bary[~valid] = 0
    return tri.reshape(-1, 3), bary.reshape(-1, 3).astype(np.float32)


def _sorted_uv(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(uv[:, 0])
    return uv[order, 0], uv[order, 1]


def _box(points: np.ndarray, pad: float) -> tuple[int, int, int, int]:
    x0, y0 = points.min(0) - pad
    x1, y1 = points.max(0) + pad
    return int(math.floor(x0)), int(math.floor(y0)), int(math.ceil(x1)), int(math.ceil(y1))


def _index_grid(width: int, height: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.ascontiguousarray(np.stack([xs, ys], -1))


def _rect_points(roi: tuple[int, int, int, int], per_side: int) -> np.ndarray:
    x0, y0, x1, y1 = roi
    x1, y1 = x1 - 1, y1 - 1
    t = np.linspace(0, 1, per_side, endpoint=False)
    top = np.stack([x0 + t * (x1 - x0), np.full_like(t, y0)], 1)
    right = np.stack([np.full_like(t, x1), y0 + t * (y1 - y0)], 1)
    bottom = np.stack([x1 - t * (x1 - x0), np.full_like(t, y1)], 1)
    left = np.stack([np.full_like(t, x0), y1 - t * (y1 - y0)], 1)
    return np.concatenate([top, right, bottom, left]).astype(np.float64)


def _delaunay(points: np.ndarray) -> np.ndarray:
    """Triangles (as vertex indices) of the Delaunay triangulation of `points`."""
    lo = points.min(0) - 4
    hi = points.max(0) + 4
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1))
    lookup: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(points):
        key = (round(float(x), 2), round(float(y), 2))
        if key in lookup:
            continue
        lookup[key] = i
        subdiv.insert((float(key[0]), float(key[1])))
    triangles = []
    for t in subdiv.getTriangleList():
        ids = [lookup.get((round(float(t[k]), 2), round(float(t[k + 1]), 2))) for k in (0, 2, 4)]
        if None not in ids:
            triangles.append(ids)
    return np.asarray(triangles, np.int32)
