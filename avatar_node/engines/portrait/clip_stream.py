"""Rendering a clip avatar: a base frame from the motion graph, the mouth from the library.

Per frame: the walk on the motion graph gives the base frame (cross-faded at a cut), placed
on the canvas as the framing asks; speech gives the wanted mouth shape, the selector the
library mouth; that mouth's canonical patch is mapped onto the base frame by the base
frame's own canonical map (so it sits under the nose and its chin goes where its jaw
was), colour-matched to the base frame where the mask fades, and blended in with a soft
mask reaching below the lower of the two chins. Silence asks for a closed mouth, so the
clip's own closed mouths are shown; idle and listening prefer calm stretches. Nods and
shakes (asked for, or while listening) move the head inside a soft ellipse; the other
behaviours of the photo avatar (smile, raised brows, blinks on demand) are not acted on:
the clip's own blinks and expressions play.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_node.engines.base import Conditioning, EngineStream, StreamOptions
from avatar_node.engines.portrait.clip_avatar import ClipIdentityData, chin_depth
from avatar_node.engines.portrait.framing import frame_placement
from avatar_node.engines.portrait.motion import Gesture, Spring, nod_curve, shake_curve
from avatar_node.engines.portrait.motion_graph import GraphWalker
from avatar_node.engines.portrait.mouth_library import apply, compose, invert, patch_to_frame
from avatar_node.engines.portrait.mouth_select import MouthSelector
from avatar_node.engines.portrait.mouth_target import MOUTH_SHUT_FRAMES, MOUTH_SHUT_OMEGA, SpeechMouth
from avatar_node.engines.portrait.speech_features import MouthShape, clamp, level_db
from avatar_node.media.canvas import render_on_canvas

# Mouth target springs (MouthShape order): quick, since the chosen mouths are real motion
# that brings its own smoothness.
_MOUTH_OMEGA = np.array([60.0, 30.0, 24.0, 60.0, 36.0, 24.0])
#: Colour gain limits when matching a mouth to its base frame.
_GAIN = (0.85, 1.18)
#: Gestures made by moving the head in the picture: duration (s), offset at full swing (F units).
_GESTURES = {"nod": (0.7, (0.0, 0.12)), "shake": (1.1, (0.1, 0.0))}
#: The head moved in a cross-fade: an ellipse around the face, in canonical F units.
_HEAD_CENTRE_Y = 0.3
_HEAD_HALF = (1.2, 1.7)
#: Shading match: the difference field is worked on at 1/_SHADING_STEP of the patch's size;
#: _SHADING_PRIOR is how much weight the band's mean difference has where no band is near.
_SHADING_STEP = 4
_SHADING_PRIOR = 0.05


@dataclass(frozen=True, eq=False)
class ClipScene:
    """The clip's placement on one canvas size and framing, and the bars around it."""

    to_canvas: np.ndarray  # 2x3: working pixels -> canvas pixels
    bars: np.ndarray  # the canvas background (the clip's border continued), HxWx3
    size: tuple[int, int]
    covered: tuple[int, int, int, int]  # (x0, y0, x1, y1): canvas pixels the clip covers

    @classmethod
    def of(cls, data: ClipIdentityData, options: StreamOptions) -> ClipScene:
        key = (options.width, options.height, options.framing)
        with data.scenes_lock:
            scene = data.scenes.get(key)
        if isinstance(scene, ClipScene):
            return scene
        placement = frame_placement(data.frame_size, data.face_extent, (options.width, options.height), options.framing)
        s = placement.scale
        to_canvas = np.array(
            [[s, 0.0, placement.offset_x + 0.5 * s - 0.5], [0.0, s, placement.offset_y + 0.5 * s - 0.5]]
        )
        bars = render_on_canvas(data.base_rgb(0), placement, options.width, options.height)
        covered = placement.covered(options.width, options.height)
        scene = cls(to_canvas, bars, (options.width, options.height), covered)
        with data.scenes_lock:
            while len(data.scenes) >= 4:
                data.scenes.pop(next(iter(data.scenes)))
            data.scenes[key] = scene
        return scene


@dataclass(frozen=True)
class BlendRecord:
    """Where the last frame's mouth went, for measurements: the canvas box, the base
    pixels under it before the blend, and the mask (soft, even when a hard one was used)."""

    x0: int
    y0: int
    base: np.ndarray
    alpha: np.ndarray
    entry: int


class ClipStream(EngineStream):
    """One session of a clip avatar. Not thread-safe: one `step` at a time."""

    def __init__(self, data: ClipIdentityData, options: StreamOptions, hard_mask: bool = False) -> None:
        self._data = data
        self._scene = ClipScene.of(data, options)
        self._frame_s = 1.0 / float(options.fps)
        self._dt = self._frame_s
        self._last_index = -1
        rng = np.random.default_rng(options.seed)
        self._walker = GraphWalker(data.graph, rng, float(options.fps))
        self._selector = MouthSelector(data.library)
        self._speech = SpeechMouth(self._frame_s)
        self._mouth = Spring(len(MouthShape.FIELDS), _MOUTH_OMEGA)
        self._calm = Spring(1, 3.0)
        self._listen_env = 0.0
        self._rng = rng
        self._gestures: list[tuple[str, Gesture]] = []
        self._next_listen_nod = 2.0
        #: For tests that must see a hard seam fail: no feather at the mask's edge.
        self.hard_mask = hard_mask
        self.last_blend: BlendRecord | None = None
        self.last_base = -1
        self.last_entry = -1
        #: The inner opening (F units) the last frame asked for.
        self.last_target_opening = 0.0

    def step(self, cond: Conditioning) -> list[np.ndarray]:
        t = cond.frame_index * self._frame_s
        self._dt = max(cond.frame_index - self._last_index, 1) * self._frame_s
        self._last_index = cond.frame_index
        target, speaking = self._target(cond, t)
        listen = np.asarray(cond.listen, dtype=np.float32)
        heard = len(listen) > 0 and level_db(listen) > -45.0
        self._listen_env = 1.0 if heard else max(0.0, self._listen_env - self._dt)
        calm = float(self._calm.step(np.array([0.0 if speaking else 1.0]), self._dt)[0])
        base = self._walker.step(calm)
        data = self._data
        rgb = data.base_rgb(base.index)
        pose = data.canon_to_frame[base.index]
        if base.fade_from >= 0:
            rgb, pose = _morph(data, base.fade_from, base.index, base.fade, rgb)
        nod = self._gesture(cond, t, speaking)
        if nod.any():
            shift = nod * float(np.linalg.norm(pose[:, 0]))
            rgb = _shift_head(rgb, pose, shift)
            pose = pose.copy()
            pose[:, 2] += shift
        frame = self._place(rgb)
        self.last_target_opening = self._selector.opening_of(target)
        own = int(data.base_entry[base.index])
        entry = self._selector.choose(target, own)
        self.last_base, self.last_entry = base.index, entry
        if entry != own or base.fade_from >= 0:
            self._paste(frame, pose, own, entry)
        else:
            self.last_blend = None
        return [frame]

    def reset_speech(self) -> None:
        self._speech.reset()
        self._mouth.hurry(MOUTH_SHUT_OMEGA, MOUTH_SHUT_FRAMES)

    def close(self) -> None:
        self._speech.reset()

    def _gesture(self, cond: Conditioning, t: float, speaking: bool) -> np.ndarray:
        """The head's offset (F units) for nods and shakes: asked for, or while listening (a
        nod every few seconds, as the photo avatar does)."""
        for name in cond.behaviours:
            if name in _GESTURES:
                self._gestures.append((name, Gesture(t, _GESTURES[name][0])))
        if self._listen_env > 0.5 and not speaking:
            if t >= self._next_listen_nod:
                self._gestures.append(("nod", Gesture(t, 0.8)))
                self._next_listen_nod = t + float(self._rng.gamma(3.0, 1.1))
        else:
            self._next_listen_nod = max(self._next_listen_nod, t + 1.0)
        offset = np.zeros(2)
        for name, gesture in list(self._gestures):
            phase = gesture.phase(t)
            if phase is None:
                if t > gesture.start + gesture.duration:
                    self._gestures.remove((name, gesture))
                continue
            curve = nod_curve(phase) if name == "nod" else shake_curve(phase)
            offset += np.array(_GESTURES[name][1]) * curve
        return offset

    def _place(self, rgb: np.ndarray) -> np.ndarray:
        """The base picture on the canvas. Only the covered box is warped (a warp that leaves
        the rest of its output untouched costs several times more)."""
        scene = self._scene
        x0, y0, x1, y1 = scene.covered
        shift = scene.to_canvas - np.array([[0.0, 0.0, x0], [0.0, 0.0, y0]])
        part = cv2.warpAffine(rgb, shift, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        w, h = scene.size
        if (x0, y0, x1, y1) == (0, 0, w, h):
            return part
        frame = scene.bars.copy()
        frame[y0:y1, x0:x1] = part
        return frame

    def _target(self, cond: Conditioning, t: float) -> tuple[np.ndarray, bool]:
        shape, _ = self._speech.target(cond, t, self._dt)
        m_open, m_width, m_teeth, m_close, _, _ = self._mouth.step(np.array(shape.as_tuple()), self._dt)
        opening = max(m_open, 0.0) * clamp(1.0 - 1.7 * m_close, 0.0, 1.0)
        teeth = clamp(m_teeth, 0.0, 1.0) * clamp(3.0 * opening, 0.0, 1.0)
        speaking = bool(cond.speaking[0]) if len(cond.speaking) else False
        return self._selector.features(clamp(opening, 0.0, 1.0), clamp(m_width, -1.0, 1.0), teeth), speaking

    def _paste(self, frame: np.ndarray, pose: np.ndarray, own: int, entry: int) -> None:
        """Blend library mouth `entry` onto the frame whose face sits at `pose` (canonical ->
        working pixels); `own` is the base frame's own mouth."""
        data, lib = self._data, self._data.library
        to_canvas = compose(self._scene.to_canvas, patch_to_frame(pose))
        ph, pw = lib.patches.shape[1:3]
        corners = np.array([[0, 0], [pw, 0], [0, ph], [pw, ph]], np.float64) @ to_canvas[:, :2].T + to_canvas[:, 2]
        h, w = frame.shape[:2]
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
        if x1 - x0 < 2 or y1 - y0 < 2:
            self.last_blend = None
            return
        # ROI pixel -> patch pixel.
        back = compose(invert(to_canvas), np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]))
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        size = (int(x1 - x0), int(y1 - y0))
        patch = cv2.warpAffine(lib.patches[entry], back, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        mask = lib.masks[lib.mask_for(max(chin_depth(data, entry), chin_depth(data, own)))]
        alpha = cv2.warpAffine(mask, back, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
        roi = frame[y0:y1, x0:x1]
        self.last_blend = BlendRecord(int(x0), int(y0), roi.copy(), alpha, entry)
        gain = np.clip(lib.ring[own] / np.maximum(lib.ring[entry], 1.0), *_GAIN).astype(np.float32)
        mouth = _match_shading(patch, gain, roi, alpha)
        if self.hard_mask:
            alpha = (alpha >= 0.5).astype(np.float32)
        roi[:] = cv2.blendLinear(mouth, roi, alpha, 1.0 - alpha)


def _morph(
    data: ClipIdentityData, old: int, new: int, fade: float, new_rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A cross-fade from base frame `old` (weight `fade`) to `new` in which each head is
    shifted toward the other's position as it fades, so the head does not show twice (the
    background, left in place, only cross-fades); and where the face is in the result
    (canonical -> working pixels)."""
    m_old, m_new = data.canon_to_frame[old], data.canon_to_frame[new]
    centre = np.array([[0.0, _HEAD_CENTRE_Y]])
    shift = apply(m_old, centre)[0] - apply(m_new, centre)[0]
    moved_new = _shift_head(new_rgb, m_new, fade * shift)
    moved_old = _shift_head(data.base_rgb(old), m_old, (fade - 1.0) * shift)
    pose = m_new.copy()
    pose[:, 2] += fade * shift
    return cv2.addWeighted(moved_old, fade, moved_new, 1.0 - fade, 0.0), pose


def _shift_head(rgb: np.ndarray, pose: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The picture with its head (a soft ellipse around the face at `pose`) moved by `shift`."""
    if float(np.hypot(*shift)) < 0.25:
        return rgb
    h, w = rgb.shape[:2]
    moved = cv2.warpAffine(
        rgb, np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]]), (w, h), borderMode=cv2.BORDER_REPLICATE
    )
    # The head's ellipse, drawn at quarter size where the moved head will be, feathered.
    q = 4
    mask = np.zeros((h // q + 1, w // q + 1), np.float32)
    centre = (apply(pose, np.array([[0.0, _HEAD_CENTRE_Y]]))[0] + shift) / q
    f = float(np.linalg.norm(pose[:, 0])) / q  # one F in quarter pixels
    axes = (max(int(_HEAD_HALF[0] * f), 1), max(int(_HEAD_HALF[1] * f), 1))
    angle = float(np.degrees(np.arctan2(pose[1, 0], pose[0, 0])))
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, angle, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.3 * f, 1.0))
    alpha = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.blendLinear(moved, rgb, alpha, 1.0 - alpha))


def _match_shading(patch: np.ndarray, gain: np.ndarray, base: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The mouth patch with the base frame's light: the low-frequency difference between the
    two where the mask fades (both show there), carried smoothly inward, is added to the patch.
    A plain gain cannot follow light that changes across the face, or a background that moved.
    The difference is taken on reduced copies (the field is smooth anyway)."""
    h, w = alpha.shape
    band = ((alpha > 0.02) & (alpha < 0.85)).astype(np.float32)
    small = (max(w // _SHADING_STEP, 2), max(h // _SHADING_STEP, 2))
    patch_small = cv2.resize(patch, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    mouth_small = patch_small * gain
    base_small = cv2.resize(base, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = cv2.resize(band, small, interpolation=cv2.INTER_AREA)
    diff = (base_small - mouth_small) * weight[..., None]
    sigma = max(small) / 14.0
    diff = cv2.GaussianBlur(diff, (0, 0), sigma)
    weight = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None]
    # Where no band is near (the middle of the mouth), the band's mean difference.
    mean = diff.reshape(-1, 3).sum(0) / max(float(weight.sum()), 1e-6)
    field = (diff + _SHADING_PRIOR * mean) / (weight + _SHADING_PRIOR)
    # The gain, near 1, joins the smooth field (as a change of the reduced patch's colour).
    field += patch_small * (gain - 1.0)
    return np.asarray(cv2.add(patch, cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR), dtype=cv2.CV_8U))


def clip_mouth_box(data: ClipIdentityData, options: StreamOptions) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) canvas pixels holding the mouth and the jaw's travel in every base
    frame, for measurements."""
    scene = ClipScene.of(data, options)
    corners = np.array([[-0.38, 0.55], [0.38, 0.55], [-0.38, 1.0], [0.38, 1.0]])
    points = np.concatenate([apply(compose(scene.to_canvas, m), corners) for m in data.canon_to_frame])
    (x0, y0), (x1, y1) = np.floor(points.min(0)).astype(int), np.ceil(points.max(0)).astype(int)
    return max(int(x0), 0), max(int(y0), 0), min(int(x1), options.width), min(int(y1), options.height)
