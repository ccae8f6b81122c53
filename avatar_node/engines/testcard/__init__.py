"""A test-card engine: a picture that shows the pipeline's timing, for checking a setup end to end.

Each frame shows the reference photo small in a corner, the frame number, and a level
bar whose height is the loudness of exactly that frame's speech (white while speaking,
grey while listening). A player, an OBS scene or a meeting app showing it makes any
audio/video offset plain to see, and tests measure it from pixels. It costs almost
nothing, so it also stands in for a real engine in load tests (`step_delay_ms` makes
it slow on purpose).
"""

from __future__ import annotations

import hashlib
import time

import cv2
import numpy as np

from avatar_node.engines.base import (
    SPEECH_SAMPLE_RATE,
    AvatarInputError,
    Conditioning,
    Engine,
    EngineInfo,
    EngineStream,
    Identity,
    StreamOptions,
)

ENGINE_NAME = "testcard"
#: The level bar: x range as a share of the width, full height at this RMS.
BAR_X = (0.80, 0.92)
FULL_SCALE_RMS = 0.3


class TestCardEngine(Engine):
    __test__ = False  # not a test class, whatever its name says
    info = EngineInfo(
        name=ENGINE_NAME,
        native_fps=25,
        frames_per_step=1,
        audio_lookahead_ms=0,
        description="Test card: frame counter and a per-frame speech level bar (for checking timing).",
    )
    behaviours = frozenset({"blink"})

    def __init__(self, step_delay_ms: float = 0.0, hiccups_ms: tuple[float, ...] = ()) -> None:
        self.step_delay_s = step_delay_ms / 1000
        #: Extra delays, one per step in turn (a jittery engine), for tests of the jitter buffer.
        self.hiccups_s = tuple(ms / 1000 for ms in hiccups_ms)

    def prepare(self, image: bytes) -> Identity:
        picture = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        if picture is None:
            raise AvatarInputError("the avatar image is not a picture this node can read (JPEG, PNG, WebP...)",
                                   "BAD_IMAGE")
        h, w = picture.shape[:2]
        thumb = cv2.cvtColor(cv2.resize(picture, (96, max(1, round(96 * h / w)))), cv2.COLOR_BGR2RGB)
        digest = hashlib.sha256(image).hexdigest()[:32]
        return Identity(f"{digest}-{ENGINE_NAME}", ENGINE_NAME, w, h, None, 0, thumb)

    def open(self, identity: Identity, options: StreamOptions) -> TestCardStream:
        return TestCardStream(identity.data, options, self)


class TestCardStream(EngineStream):
    __test__ = False
    def __init__(self, thumb: np.ndarray, options: StreamOptions, engine: TestCardEngine) -> None:
        self._size = (options.width, options.height)
        self._frame_samples = round(SPEECH_SAMPLE_RATE / options.fps)
        self._engine = engine  # its step_delay_s may change while the stream runs
        self._steps = 0
        base = np.full((options.height, options.width, 3), 40, np.uint8)
        th, tw = min(thumb.shape[0], options.height), min(thumb.shape[1], options.width)
        base[:th, :tw] = thumb[:th, :tw]
        self._base = base

    def step(self, cond: Conditioning) -> list[np.ndarray]:
        hiccups = self._engine.hiccups_s
        delay = self._engine.step_delay_s + (hiccups[self._steps % len(hiccups)] if hiccups else 0.0)
        self._steps += 1
        if delay:
            time.sleep(delay)
        frame = self._base.copy()
        width, height = self._size
        audio = np.asarray(cond.speech[: self._frame_samples], np.float32)
        level = float(np.sqrt(np.mean(audio * audio))) if len(audio) else 0.0
        listen = np.asarray(cond.listen[: self._frame_samples], np.float32)
        heard = float(np.sqrt(np.mean(listen * listen))) if len(listen) else 0.0
        x0, x1 = int(BAR_X[0] * width), int(BAR_X[1] * width)
        top = height - int(min(level / FULL_SCALE_RMS, 1.0) * height)
        frame[top:, x0:x1] = 255 if cond.speaking and cond.speaking[0] else 160
        if heard > 0.01:
            frame[: height // 10, x0:x1] = (80, 160, 255)
        cv2.putText(frame, str(cond.frame_index), (8, height - 12), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.5, height / 240), (255, 255, 255), 2, cv2.LINE_AA)
        return [frame]


def bar_level(frame: np.ndarray) -> float:
    """The level bar's height read back from a (decoded) frame, 0..1."""
    height, width = frame.shape[:2]
    x0, x1 = int(BAR_X[0] * width), int(BAR_X[1] * width)
    column = frame[:, (x0 + x1) // 2 - 2 : (x0 + x1) // 2 + 2].mean(axis=(1, 2))
    return float(np.mean(column > 100))
