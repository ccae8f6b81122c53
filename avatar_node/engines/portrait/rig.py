"""A face rig in canvas pixels: control vectors on the mesh and a dense warp field.

Built once per stream (at `open`, from the identity's cached landmarks), a rig holds:
- the vertices: the 468 mesh points, the two iris centres, and two rings around the
  face (the inner ring follows the head partly, the outer ring and the ROI border are
  pinned) so the warp fades to nothing before the background;
- a Delaunay triangulation of them, rasterised once into per-pixel vertex ids and
  barycentric weights over the face ROI (at half resolution: the field is smooth);
- one displacement vector per vertex for each control (jaw, lip width, smile, blinks,
  brows, gaze, head pose). Every control is linear, so a frame's vertex motion is a
  weighted sum and its dense field three gathers; the frame is one `cv2.remap` of the ROI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.portrait import topology as topo

#: Control names, in the order of the rows of `FaceRig.basis`.
CONTROLS = (
    "jaw",  # inner-lip gap in face units (F = outer eye-corner distance); negative closes
    "width",  # mouth corners outwards (+, spread) or inwards (-, rounded), face units
    "smile",  # corners up and out, cheeks up, face units
    "lip_funnel",  # rounded lips pushed out: both lips thicker, face units
    "blink_right",  # 0 open .. 1 closed (subject's right eye)
    "blink_left",
    "brows",  # brows up, face units
    "gaze_x",  # iris shift, iris radii
    "gaze_y",
    "yaw",  # head turn, radians (small)
    "pitch",  # head nod, radians (small, + = chin down)
    "roll",  # head tilt, radians (small)
    "shift_x",  # head translation, face units
    "shift_y",
)
CONTROL_INDEX = {name: i for i, name in enumerate(CONTROLS)}

_IRIS_RIGHT = 468
_IRIS_LEFT = 469


@dataclass(frozen=True)
class MouthFrame:
    """Where the inner mouth is in one rendered frame (canvas pixels)."""

    inner_upper: np.ndarray  # (11, 2) corner to corner
    inner_lower: np.ndarray  # (11, 2)
    gap: float  # inner-lip gap at the centre, pixels
    teeth: float  # 0..1 how much of the teeth shows


class FaceRig:
    def __init__(self, points: np.ndarray, irises: np.ndarray, canvas_size: tuple[int, int]):
        """points: (468, 3) canvas pixels (z in pixels); irises: (2, 3) x, y, radius."""
        width, height = canvas_size
        mesh = points[:, :2].astype(np.float64)
        self.depth = points[:, 2].astype(np.float64)
        self.iris_radius = float(np.mean(irises[:, 2]))

        right_eye = mesh[[topo.RIGHT_EYE_OUTER, topo.RIGHT_EYE_INNER]].mean(0)
        left_eye = mesh[[topo.LEFT_EYE_OUTER, topo.LEFT_EYE_INNER]].mean(0)
        self.unit = float(np.linalg.norm(mesh[topo.LEFT_EYE_OUTER] - mesh[topo.RIGHT_EYE_OUTER]))
        ex = (left_eye - right_eye) / np.linalg.norm(left_eye - right_eye)
        ey = np.array([-ex[1], ex[0]])  # points down the face
        self.axes = np.stack([ex, ey])
        self.mouth_centre = mesh[[78, 308, 13, 14]].mean(0)

        oval = mesh[list(topo.FACE_OVAL)]
        centre = oval.mean(0)
        inner_ring = centre + 1.3 * (oval - centre)
        outer_ring = centre + 1.9 * (oval - centre)
        x0, y0 = np.floor(np.maximum(outer_ring.min(0), 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(outer_ring.max(0), [width - 1, height - 1])).astype(int)
        self.roi = (int(x0), int(y0), int(x1) + 1, int(y1) + 1)
        rw, rh = self.roi[2] - self.roi[0], self.roi[3] - self.roi[1]
        border = _rect_points(self.roi, 8)
        outer_ring = np.clip(outer_ring, [x0, y0], [x1, y1])
        inner_ring = np.clip(inner_ring, [x0, y0], [x1, y1])
        self.vertices = np.concatenate([mesh, irises[:, :2], inner_ring, outer_ring, border])
        n_mesh, n_inner = 470, len(inner_ring)
        self._inner_ring = np.arange(n_mesh, n_mesh + n_inner)
        self._pinned = np.arange(n_mesh + n_inner, len(self.vertices))
        self._oval = np.array(topo.FACE_OVAL)

        self._build_field_interpolation(rw, rh)
        self.basis = self._build_basis(mesh, irises)
        # Dense half-resolution field of each control: per frame the field is one
        # weighted sum of these (a matrix product), not a per-pixel gather.
        self._fields = np.ascontiguousarray(
            (self._bary[None, :, :, None] * self.basis[:, self._tri_ids]).sum(2) / 2.0, dtype=np.float32
        )
        hh, hw = self._half_shape
        self._grid_half = _grid(hw, hh)
        self._grid_canvas = _grid(rw, rh) + np.array([x0, y0], np.float32)

    # -- set-up --------------------------------------------------------------------------

    def _build_field_interpolation(self, rw: int, rh: int) -> None:
        """Per pixel of the half-resolution ROI: three vertex ids and barycentric weights."""
        x0, y0 = self.roi[:2]
        local = (self.vertices - [x0, y0]) / 2.0
        hw, hh = (rw + 1) // 2, (rh + 1) // 2
        triangles = _delaunay(local, hw, hh)
        tri_map = np.full((hh, hw), -1, np.int32)
        for t, tri in enumerate(triangles):
            cv2.fillConvexPoly(tri_map, np.round(local[tri] * 16).astype(np.int32), t, cv2.LINE_8, 4)
        ys, xs = np.mgrid[0:hh, 0:hw]
        valid = tri_map >= 0
        tri = triangles[np.where(valid, tri_map, 0)]  # (hh, hw, 3)
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
        self._tri_ids = tri.reshape(-1, 3).astype(np.int32)
        self._bary = bary.reshape(-1, 3).astype(np.float32)
        self._half_shape = (hh, hw)

    def _face_coords(self, p: np.ndarray) -> np.ndarray:
        """(u, v) of points relative to the mouth centre, in face units."""
        return ((p - self.mouth_centre) @ self.axes.T) / self.unit

    def _build_basis(self, mesh: np.ndarray, irises: np.ndarray) -> np.ndarray:
        n = len(self.vertices)
        basis = np.zeros((len(CONTROLS), n, 2))
        ex, ey = self.axes
        F = self.unit
        uv = self._face_coords(mesh)
        u, v = uv[:, 0], uv[:, 1]
        mouth_half = float(abs(self._face_coords(mesh[[topo.MOUTH_RIGHT_CORNER]])[0, 0]))
        mouth_half = max(mouth_half, 0.15)
        lower_lip = set(topo.LIPS_INNER_LOWER[1:-1]) | set(topo.LIPS_OUTER_LOWER[1:-1])
        upper_lip = set(topo.LIPS_INNER_UPPER[1:-1]) | set(topo.LIPS_OUTER_UPPER[1:-1])
        corners = {61, 291, 78, 308}

        # Jaw: the lower lip, chin and jaw drop (the jaw hinges near the ears, so the
        # drop fades sideways); the upper lip lifts a little. Unit: 1 F of lip gap.
        side = np.clip(1 - (np.abs(u) / 1.0) ** 2, 0, 1) ** 0.8
        below = 1 / (1 + np.exp(-(v - 0.03) / 0.03))
        jaw = 0.8 * below * side
        jaw[list(lower_lip)] = 0.8
        jaw[list(upper_lip)] = -0.2
        jaw[list(corners)] = 0.3
        # Cheeks beside the mouth stretch a little with it.
        cheek = (v > -0.35) & (v < 0.03) & ~np.isin(np.arange(len(mesh)), list(upper_lip | corners))
        jaw[cheek] += 0.15 * np.exp(-((np.abs(u[cheek]) - mouth_half) / 0.25) ** 2)
        basis[CONTROL_INDEX["jaw"], :468] = np.outer(jaw, ey) * F

        # Width: corners out (spread) or in (rounded); lips follow in proportion.
        near_mouth = np.exp(-((v / 0.28) ** 2)) * np.exp(-np.maximum(np.abs(u) - mouth_half, 0) / 0.2)
        du = np.clip(u / mouth_half, -1.2, 1.2) * near_mouth
        basis[CONTROL_INDEX["width"], :468] = np.outer(du, ex) * F

        # Smile: corners up and out, cheeks lifted.
        corner_pull = np.exp(-(((np.abs(u) - mouth_half) / 0.28) ** 2) - ((v / 0.3) ** 2))
        smile = np.outer(corner_pull * np.sign(u) * 0.45, ex) - np.outer(corner_pull, ey)
        cheeks = np.exp(-(((np.abs(u) - mouth_half * 1.3) / 0.35) ** 2) - (((v + 0.35) / 0.3) ** 2))
        smile -= np.outer(0.35 * cheeks, ey)
        basis[CONTROL_INDEX["smile"], :468] = smile * F

        # Funnel (rounded lips pushed out): outer lip contours move away from the mouth line.
        funnel = np.zeros((468, 2))
        funnel[list(topo.LIPS_OUTER_UPPER[1:-1])] = -ey
        funnel[list(topo.LIPS_OUTER_LOWER[1:-1])] = ey
        basis[CONTROL_INDEX["lip_funnel"], :468] = funnel * F

        # Blinks: upper lid onto the lower lid (the lower lid rises a little); the skin
        # just above the lid follows part way.
        for name, upper, lower in (
            ("blink_right", topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER),
            ("blink_left", topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER),
        ):
            b = basis[CONTROL_INDEX[name]]
            up, lo = mesh[list(upper)], mesh[list(lower)]
            gap = lo - up
            eye_centre = np.concatenate([up, lo]).mean(0)
            eye_w = float(np.linalg.norm(up[0] - up[-1]))
            for i, (iu, il) in enumerate(zip(upper[1:-1], lower[1:-1]), start=1):
                b[iu] = 0.85 * gap[i]
                b[il] = -0.15 * gap[i]
            mean_gap = float(np.mean(np.abs(gap[1:-1] @ ey)))
            others = np.setdiff1d(np.arange(468), list(upper) + list(lower))
            d = mesh[others] - eye_centre
            above = (d @ ey < 0) & (np.abs(d @ ex) < eye_w * 0.6)
            r = np.linalg.norm(d, axis=1) / eye_w
            w = np.where(above, 0.45 * np.exp(-((r / 0.55) ** 2)), 0.0)
            b[others] = np.outer(w * mean_gap, ey)
            iris = _IRIS_RIGHT if name == "blink_right" else _IRIS_LEFT
            b[iris] = 0.5 * gap[len(gap) // 2]

        # Brows up; the forehead above follows.
        brows = np.zeros(468)
        brows[list(topo.RIGHT_BROW) + list(topo.LEFT_BROW)] = 1.0
        eye_line = self._face_coords(np.stack([mesh[topo.RIGHT_EYE_OUTER], mesh[topo.LEFT_EYE_OUTER]]))[:, 1].mean()
        brow_v = self._face_coords(mesh[list(topo.RIGHT_BROW)])[:, 1].mean()
        forehead = v < brow_v
        brows[forehead] = np.maximum(brows[forehead], 0.6)
        between = (v >= brow_v) & (v < eye_line - 0.05)
        brows[between] = np.maximum(brows[between], 0.4)
        basis[CONTROL_INDEX["brows"], :468] = -np.outer(brows, ey) * F

        # Gaze: the iris centres slide inside the fixed eye contour.
        r = float(np.mean(irises[:, 2]))
        basis[CONTROL_INDEX["gaze_x"], [_IRIS_RIGHT, _IRIS_LEFT]] = ex * r * 0.45
        basis[CONTROL_INDEX["gaze_y"], [_IRIS_RIGHT, _IRIS_LEFT]] = ey * r * 0.3

        # Head pose on the face, with the depth from the mesh giving parallax for yaw and
        # pitch. The inner ring (hair, ears, neck edge) follows at 60 %, the outer ring and
        # the ROI border are pinned.
        head = np.concatenate([mesh, irises[:, :2]])
        z = np.concatenate([self.depth, self.depth[[topo.RIGHT_EYE_INNER, topo.LEFT_EYE_INNER]]])
        z_rel = z - np.median(self.depth[self._oval])
        pivot = mesh[topo.CHIN] + ey * F * 0.6
        rel = head - pivot
        yaw = np.outer(-z_rel, ex)
        pitch = np.outer(-z_rel, ey) * 0.6 + np.outer(np.full(len(head), 0.08 * F), ey)
        roll = np.stack([-rel[:, 1], rel[:, 0]], 1)
        for name, field in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
            basis[CONTROL_INDEX[name], : len(head)] = field
        basis[CONTROL_INDEX["shift_x"], : len(head)] = ex * F
        basis[CONTROL_INDEX["shift_y"], : len(head)] = ey * F
        # Inner ring: 60 % of the motion of the nearest oval vertex, for every control
        # (so a jaw drop stretches the neck edge instead of tearing it).
        basis[:, self._inner_ring] = 0.6 * basis[:, self._oval]
        basis[:, self._pinned] = 0.0
        return basis.astype(np.float32)

    # -- per frame -----------------------------------------------------------------------

    def vertex_offsets(self, controls: np.ndarray) -> np.ndarray:
        """(n_vertices, 2) displacement for a vector of control values (CONTROLS order)."""
        return np.tensordot(controls.astype(np.float32), self.basis, axes=1)

    def warp(self, canvas: np.ndarray, out: np.ndarray, controls: np.ndarray) -> None:
        """Write into `out` (same shape as canvas) the ROI of `canvas` moved by `controls`."""
        x0, y0, x1, y1 = self.roi
        hh, hw = self._half_shape
        # Forward field at half resolution, in half-resolution pixels.
        field = np.tensordot(controls.astype(np.float32), self._fields, axes=1).reshape(hh, hw, 2)
        # remap wants, for each output pixel, where it came from: invert the forward
        # field with one fixed-point step (accurate enough for the large jaw motions).
        back = cv2.remap(field, self._grid_half - field, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        back = cv2.resize(back, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        src = cv2.scaleAdd(back, -2.0, self._grid_canvas)
        out[y0:y1, x0:x1] = cv2.remap(canvas, src, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def mouth_frame(self, offsets: np.ndarray, teeth: float) -> MouthFrame:
        upper = self.vertices[list(topo.LIPS_INNER_UPPER)] + offsets[list(topo.LIPS_INNER_UPPER)]
        lower = self.vertices[list(topo.LIPS_INNER_LOWER)] + offsets[list(topo.LIPS_INNER_LOWER)]
        gap = float((lower[5] - upper[5]) @ self.axes[1])
        return MouthFrame(upper, lower, gap, teeth)

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


def _box(points: np.ndarray, pad: float) -> tuple[int, int, int, int]:
    x0, y0 = points.min(0) - pad
    x1, y1 = points.max(0) + pad
    return int(math.floor(x0)), int(math.floor(y0)), int(math.ceil(x1)), int(math.ceil(y1))


def _grid(width: int, height: int) -> np.ndarray:
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


def _delaunay(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Triangles (as vertex indices) of the Delaunay triangulation of `points`."""
    subdiv = cv2.Subdiv2D((-2, -2, width + 4, height + 4))
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
