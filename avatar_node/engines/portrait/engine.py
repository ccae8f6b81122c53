"""The portrait engine: prepare a photo once, then animate it frame by frame."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import numpy as np

from avatar_node.engines.base import (
    AvatarInputError,
    Conditioning,
    Engine,
    EngineInfo,
    EngineStream,
    FaceBox,
    Identity,
    StreamOptions,
)
from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.clip_avatar import ClipIdentityData, prepare_clip
from avatar_node.engines.portrait.clip_decode import looks_like_video
from avatar_node.engines.portrait.clip_stream import ClipStream
from avatar_node.engines.portrait.detection import FaceDetector
from avatar_node.engines.portrait.eyelids import EyeLids
from avatar_node.engines.portrait.framing import frame_placement
from avatar_node.engines.portrait.landmarks import FaceMesh, face_mesh_from_detection
from avatar_node.engines.portrait.models import FaceModels
from avatar_node.engines.portrait.motion import (
    Blinker,
    Gesture,
    OrnsteinUhlenbeck,
    Spring,
    bump_curve,
    nod_curve,
    shake_curve,
)
from avatar_node.engines.portrait.mouth_interior import MouthInterior
from avatar_node.engines.portrait.mouth_target import MOUTH_SHUT_FRAMES, MOUTH_SHUT_OMEGA, SpeechMouth
from avatar_node.engines.portrait.photo import decode_photo
from avatar_node.engines.portrait.rig import HEAD_CONTROLS, LOCAL_CONTROLS, LOCAL_INDEX, FaceRig
from avatar_node.engines.portrait.speech_features import MouthShape, clamp, level_db
from avatar_node.media.canvas import render_on_canvas

ENGINE_NAME = "portrait"
#: Faces whose mesh presence is below this are detector false positives.
MIN_FACE_PRESENCE = 0.5
#: Smallest face (box side, photo pixels) the mesh can follow.
MIN_FACE_PIXELS = 24


@dataclass(frozen=True, eq=False)
class PortraitIdentityData:
    """What `prepare` learns about a photo; shared read-only by every stream of it."""

    image: np.ndarray  # RGB uint8, the decoded photo
    points: np.ndarray  # (468, 3) face mesh in photo pixels
    irises: np.ndarray  # (2, 3) iris centre x, y and radius in photo pixels
    face_boxes: tuple[FaceBox, ...]  # every face found, largest first (original pixels)
    #: Scenes built for this photo, by canvas size and framing: a stream opens in a few
    #: milliseconds when another stream of the same avatar and size came before it.
    scenes: dict[tuple[int, int, str], Scene] = field(default_factory=dict, compare=False)
    scenes_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class Scene:
    """The photo on the canvas with its rig, eyelids and mouth interior: read-only once built,
    so any number of streams share it."""

    canvas: np.ndarray
    rig: FaceRig
    lids: EyeLids
    interior: MouthInterior

    @classmethod
    def of(cls, data: PortraitIdentityData, options: StreamOptions) -> Scene:
        key = (options.width, options.height, options.framing)
        with data.scenes_lock:
            scene = data.scenes.get(key)
        if scene is None:
            canvas, rig = canvas_rig(data, options)
            interior = MouthInterior(canvas, rig)
            scene = cls(canvas, rig, EyeLids(rig, canvas, interior.look.blur), interior)
            with data.scenes_lock:
                while len(data.scenes) >= MAX_SCENES_PER_AVATAR:
                    data.scenes.pop(next(iter(data.scenes)))
                scene = data.scenes.setdefault(key, scene)
        return scene


#: Distinct canvas sizes (and framings) kept per avatar.
MAX_SCENES_PER_AVATAR = 4


class PortraitEngine(Engine):
    """Animates the reference photo itself: speech-driven mouth and jaw, blinks, head
    motion, gaze and a listening state, by a landmark mesh warp. CPU only, no weights."""

    info = EngineInfo(
        name=ENGINE_NAME,
        native_fps=25,
        frames_per_step=1,
        # The mouth reads the sound up to 30 ms past each frame's start plus half a frame (at
        # least 16 ms): 30 ms past a frame's end covers any rate up to 60 fps.
        audio_lookahead_ms=30,
        max_batch=1,
        description="CPU portrait animation: a face-mesh warp driven by speech (no GPU, no weights).",
    )
    behaviours = frozenset({"nod", "shake", "smile", "blink", "raise_eyebrows"})

    def __init__(self, model_dir: str | None = None) -> None:
        self._model_dir = model_dir
        self._models: FaceModels | None = None
        self._detector: FaceDetector | None = None
        self._lock = threading.Lock()

    def _ensure_models(self) -> tuple[FaceModels, FaceDetector]:
        with self._lock:
            if self._models is None:
                self._models = FaceModels(self._model_dir)
                self._detector = FaceDetector(self._models)
            assert self._detector is not None
            return self._models, self._detector

    def prepare(self, image: bytes) -> Identity:
        if looks_like_video(image):
            models, detector = self._ensure_models()
            return prepare_clip(image, models, detector, ENGINE_NAME)
        photo = decode_photo(image)
        rgb = photo.rgb
        models, detector = self._ensure_models()
        faces: list[tuple[FaceBox, FaceMesh]] = []
        for det in detector.detect(rgb):
            if det.size < MIN_FACE_PIXELS:
                continue
            mesh = face_mesh_from_detection(models, rgb, det)
            if mesh.presence < MIN_FACE_PRESENCE:
                continue
            x0, y0, x1, y1 = np.array(mesh.box) / photo.scale  # reported in original pixels
            faces.append((FaceBox(float(x0), float(y0), float(x1 - x0), float(y1 - y0)), mesh))
        if not faces:
            raise AvatarInputError(
                "No face was found in the avatar image. Use a photo where one face is clearly "
                "visible, facing the camera, at least about 60 pixels wide.",
                "NO_FACE",
            )
        faces.sort(key=lambda f: f[0].width * f[0].height, reverse=True)
        box, mesh = faces[0]
        digest = hashlib.sha256(image).hexdigest()[:32]
        rgb.setflags(write=False)
        data = PortraitIdentityData(
            image=rgb,
            points=mesh.points,
            irises=mesh.irises,
            face_boxes=tuple(f[0] for f in faces),
        )
        Scene.of(data, StreamOptions())  # the default canvas, built now: sessions then start at once
        return Identity(
            avatar_id=f"{digest}-{ENGINE_NAME}",
            engine=ENGINE_NAME,
            image_width=photo.width,
            image_height=photo.height,
            face=box,
            faces_found=len(faces),
            data=data,
        )

    def open(self, identity: Identity, options: StreamOptions) -> EngineStream:
        if isinstance(identity.data, ClipIdentityData):
            return ClipStream(identity.data, options)
        if not isinstance(identity.data, PortraitIdentityData):
            raise ValueError("This identity was prepared by another engine; prepare it with 'portrait'.")
        return PortraitStream(identity.data, options)


def canvas_rig(data: PortraitIdentityData, options: StreamOptions) -> tuple[np.ndarray, FaceRig]:
    """The photo placed on the output canvas (as `options.framing` asks), and the face
    rig in canvas pixels."""
    image = np.asarray(data.image)
    x0, y0 = data.points[:, :2].min(0)
    x1, y1 = data.points[:, :2].max(0)
    placement = frame_placement(
        (image.shape[1], image.shape[0]),
        (float(x0), float(y0), float(x1), float(y1)),
        (options.width, options.height),
        options.framing,
    )
    canvas = render_on_canvas(image, placement, options.width, options.height)
    s = placement.scale
    # Photo pixel index -> canvas pixel index (pixel centres map onto pixel centres).
    offset = np.array([placement.offset_x, placement.offset_y], np.float64) + 0.5 * s - 0.5
    points = data.points.astype(np.float64).copy()
    points[:, :2] = points[:, :2] * s + offset
    points[:, 2] *= s
    irises = data.irises.astype(np.float64).copy()
    irises[:, :2] = irises[:, :2] * s + offset
    irises[:, 2] *= s
    return canvas, FaceRig(points, irises, (options.width, options.height))


# Mouth spring channels, in MouthShape order: open, width, teeth, lip_close, lip_bite, lower_teeth.
_MOUTH_OMEGA = np.array([32.0, 28.0, 20.0, 42.0, 34.0, 20.0])
# Head channels: yaw, pitch, roll (radians), shift_x, shift_y (face units).
_HEAD_SIGMA = np.array([0.030, 0.020, 0.016, 0.010, 0.006])
_HEAD_TAU = np.array([1.7, 1.2, 2.4, 2.0, 1.5])
#: Head motion relative to _HEAD_SIGMA when idle, speaking and listening.
_HEAD_ACTIVITY_IDLE = 0.4
_HEAD_ACTIVITY_SPEAKING = 1.25
_HEAD_ACTIVITY_LISTENING = 0.5
#: Widest inner-lip gap (an open "a"), in face units (F = outer eye-corner distance).
MAX_OPEN = 0.22


class PortraitStream(EngineStream):
    """One session's animation state. Not thread-safe: one `step` at a time."""

    def __init__(self, data: PortraitIdentityData, options: StreamOptions) -> None:
        self._options = options
        self._frame_s = 1.0 / float(options.fps)
        self._dt = self._frame_s  # time since the previous step
        self._last_index = -1
        scene = Scene.of(data, options)
        self.rig = scene.rig
        self._lids = scene.lids
        self._interior = scene.interior
        self._canvas = self._interior.warp_source
        self._neutral_gap = self.rig.neutral_gap()
        self._rng = np.random.default_rng(options.seed)
        self._speech_mouth = SpeechMouth(self._frame_s)
        self._mouth = Spring(len(MouthShape.FIELDS), _MOUTH_OMEGA)
        self._state = Spring(2, 7.0)  # speaking, listening weights
        self._listen_env = 0.0
        self._next_listen_nod = 2.0
        self._head_noise = OrnsteinUhlenbeck(self._rng, 5, _HEAD_SIGMA, _HEAD_TAU)
        self._head = Spring(5, 8.0)
        self._gaze = Spring(2, 45.0)
        self._gaze_target = np.zeros(2)
        self._next_saccade = float(self._rng.uniform(0.5, 2.0))
        self._blinker = Blinker(self._rng)
        self._gestures: list[tuple[str, Gesture]] = []
        self._prev_level = 0.0
        self._emphasis = Spring(1, 12.0)
        self._last_offsets = np.zeros_like(self.rig.vertices)
        self._last_blink = 0.0

    # -- the contract --------------------------------------------------------------------

    def step(self, cond: Conditioning) -> list[np.ndarray]:
        # Time comes from the frame index: a live session that skipped frames to stay on
        # time moves every spring and timer over the whole gap in one (stable) step.
        t = cond.frame_index * self._frame_s
        self._dt = max(cond.frame_index - self._last_index, 1) * self._frame_s
        self._last_index = cond.frame_index
        for name in cond.behaviours:
            self._start_behaviour(name, t)
        head, local, blink, teeth, lower_teeth = self._controls(cond, t)
        frame = self._canvas.copy()
        self.rig.warp(self._canvas, frame, head, local, self._lids.slider(blink))
        offsets = self.rig.vertex_offsets(head, local)
        self._last_offsets = offsets
        self._last_blink = blink
        self._lids.draw_lashes(frame, blink, offsets)
        self._interior.paint(frame, self.rig.mouth_frame(offsets), teeth, lower_teeth)
        return [frame]

    def lip_contours(self) -> dict[str, np.ndarray]:
        """Where the lips were in the last frame (canvas pixels, corner to corner): for
        measurements that need to know where to look in the pixels."""
        verts = self.rig.vertices + self._last_offsets
        return {
            "outer_upper": verts[list(topo.LIPS_OUTER_UPPER)],
            "inner_upper": verts[list(topo.LIPS_INNER_UPPER)],
            "inner_lower": verts[list(topo.LIPS_INNER_LOWER)],
            "outer_lower": verts[list(topo.LIPS_OUTER_LOWER)],
        }

    def lid_edges(self) -> list[np.ndarray]:
        """Where the upper lids' edges were in the last frame (canvas pixels, one curve per
        eye, outer corner to inner corner): for measurements, like `lip_contours`."""
        return self._lids.lid_edges(self._last_blink, self._last_offsets)

    def reset_speech(self) -> None:
        self._speech_mouth.reset()
        self._mouth.hurry(MOUTH_SHUT_OMEGA, MOUTH_SHUT_FRAMES)

    def close(self) -> None:
        self._speech_mouth.reset()

    # -- animation -----------------------------------------------------------------------

    def _start_behaviour(self, name: str, t: float) -> None:
        durations = {"nod": 0.7, "shake": 1.1, "smile": 2.5, "raise_eyebrows": 1.2}
        if name == "blink":
            self._blinker.trigger(t)
        elif name in durations:
            self._gestures.append((name, Gesture(t, durations[name])))

    def _mouth_target(self, cond: Conditioning, t: float) -> tuple[MouthShape, float]:
        """The mouth shape wanted at t, and the speech level (0..1) for head emphasis."""
        return self._speech_mouth.target(cond, t, self._dt)

    def _controls(self, cond: Conditioning, t: float) -> tuple[np.ndarray, np.ndarray, float, float, float]:
        """Head and local control vectors, eyelid closure, and teeth shown (upper, lower)."""
        dt = self._dt
        head_c = np.zeros(len(HEAD_CONTROLS))
        local = np.zeros(len(LOCAL_CONTROLS))
        li = LOCAL_INDEX

        shape, level = self._mouth_target(cond, t)
        m_open, m_width, m_teeth, m_close, m_bite, m_lower = self._mouth.step(np.array(shape.as_tuple()), dt)
        m_open, m_teeth, m_close = max(m_open, 0.0), clamp(m_teeth, 0, 1), clamp(m_close, 0, 1)
        m_bite, m_lower = clamp(m_bite, 0, 1), clamp(m_lower, 0, 1)
        m_width = clamp(m_width, -1, 1)
        # Pressed lips win over any opening the neighbouring vowels ask for.
        gap = m_open * MAX_OPEN * clamp(1.0 - 1.7 * m_close, 0.0, 1.0)
        upper_lip = 0.015 * m_teeth * max(m_width, 0.0) + 0.03 * m_bite
        pucker = max(-m_width, 0.0) * 0.03
        lower_lip = 0.008 * m_bite
        local[li["upper_lip"]] = upper_lip
        local[li["lower_lip"]] = lower_lip
        local[li["pucker"]] = pucker
        local[li["width"]] = m_width * (0.05 if m_width > 0 else 0.12)
        local[li["press"]] = 0.018 * m_close
        # The jaw makes up the rest of the wanted inner-lip gap (never below touching lips).
        local[li["jaw"]] = max(gap, 0.0) - self._neutral_gap - upper_lip - 0.5 * pucker + 1.1 * lower_lip

        # States: speaking, listening (the user talks and we do not), idle.
        speaking = float(bool(cond.speaking[0])) if len(cond.speaking) else 0.0
        listen = np.asarray(cond.listen, dtype=np.float32)
        heard = level_db(listen) > -45.0 if len(listen) else False
        # Listening envelope: on at once, off ~1 s after the user stops.
        self._listen_env = 1.0 if heard else max(0.0, self._listen_env - dt / 1.0)
        listening = self._listen_env * (1.0 - speaking)
        w_speak, w_listen = self._state.step(np.array([speaking, listening]), dt)
        w_idle = max(0.0, 1.0 - w_speak - w_listen)

        # Head: slow noise, livelier when speaking, calm when idle or listening, plus a
        # small dip of the chin on stressed syllables.
        activity = (
            _HEAD_ACTIVITY_IDLE * w_idle + _HEAD_ACTIVITY_SPEAKING * w_speak + _HEAD_ACTIVITY_LISTENING * w_listen
        )
        noise = self._head_noise.step(dt, 1.0)
        rise = max(level - self._prev_level, 0.0)
        self._prev_level = level
        emphasis = self._emphasis.step(np.array([rise * w_speak]), dt)[0]
        head_target = noise * activity
        head_target[1] += 0.05 * emphasis
        # Listening posture: a slight tilt and chin lowered, facing the speaker.
        head_target += w_listen * np.array([0.0, 0.03, 0.045, 0.0, 0.004])
        head = self._head.step(head_target, dt).copy()

        smile = 0.02 * w_listen
        brows = 0.01 * emphasis + 0.012 * w_listen
        if w_listen > 0.5 and t >= self._next_listen_nod:
            self._gestures.append(("nod", Gesture(t, 0.8)))
            self._next_listen_nod = t + float(self._rng.gamma(3.0, 1.1))
        elif w_listen <= 0.5:
            self._next_listen_nod = max(self._next_listen_nod, t + 1.0)
        for name, gesture in list(self._gestures):
            p = gesture.phase(t)
            if p is None:
                if t > gesture.start + gesture.duration:
                    self._gestures.remove((name, gesture))
                continue
            if name == "nod":
                head[1] += 0.07 * nod_curve(p)
            elif name == "shake":
                head[0] += 0.06 * shake_curve(p)
            elif name == "smile":
                smile += 0.05 * bump_curve(p)
            elif name == "raise_eyebrows":
                brows += 0.05 * bump_curve(p)
        head_c[:] = head
        local[li["smile"]] = smile
        local[li["brows"]] = brows

        # Gaze: saccades to a new point every 0.6-3 s; near the camera when listening.
        if t >= self._next_saccade:
            spread = 1.0 - 0.6 * w_listen
            self._gaze_target = self._rng.normal(0, [0.35, 0.18]) * spread
            self._next_saccade = t + float(self._rng.uniform(0.6, 3.0))
        gaze = self._gaze.step(self._gaze_target, dt)
        local[li["gaze_x"]], local[li["gaze_y"]] = float(gaze[0]), float(gaze[1])

        blink = self._blinker.closure(t, rate=1.0 + 0.3 * w_speak)
        lower_teeth = m_lower * clamp(gap / (0.5 * MAX_OPEN), 0.0, 1.0) if gap > 0 else 0.0
        return head_c, local, blink, m_teeth, max(lower_teeth, 0.0)
