"""What a viewer sees, measured from pixels: colour kept, lids that hide the iris with one
smooth edge, calm silence, a listening face.

Where a test must know where to look (the iris, the lids), it asks the engine for the
geometry of that frame; what it asserts is always read from the frame's pixels.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.engine import canvas_rig
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box

from .conftest import OPTIONS
from .helpers import luma, polygon_mask, rest_aperture, run

_EYES = ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER), (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER))


@pytest.fixture(scope="module")
def grey_identity(engine, sample_rgb):
    grey = Image.fromarray(sample_rgb).convert("L")
    out = io.BytesIO()
    grey.save(out, format="JPEG", quality=92)
    return engine.prepare(out.getvalue())


# -- colour --------------------------------------------------------------------------


def test_greyscale_photo_gives_greyscale_frames(engine, grey_identity, vowels) -> None:
    clip, speech = vowels
    n = int(clip.duration_s * OPTIONS.fps)
    frames, _, stream = run(
        engine, grey_identity, n, speech=speech, phonemes=clip.phonemes, behaviours={5: ["blink"], 40: ["smile"]}
    )
    x0, y0, x1, y1 = stream.rig.roi
    spread = []
    for frame in frames:
        face = frame[y0:y1, x0:x1].astype(np.int16)
        spread.append(np.max(np.abs(face - face.mean(2, keepdims=True)), axis=2))
    spread = np.stack(spread)
    print(f"channel spread in the face: mean {spread.mean():.2f}, p99.9 {np.percentile(spread, 99.9):.1f}")
    assert spread.mean() < 0.6
    assert np.percentile(spread, 99.9) <= 3


# -- eyes ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sample", "smile"])
def blink(request, engine, identity, smile_identity):
    """An open and a fully closed frame of a requested blink (it starts at once and is
    shut 0.08 s later, frame +2 at 25 fps), the rig, and where the closed lids' edges are."""
    ident = identity if request.param == "sample" else smile_identity
    stream = engine.open(ident, OPTIONS)
    from avatar_node.engines.portrait.drive import frame_conditions

    frames, edges = [], []
    for cond in frame_conditions(13, OPTIONS.fps, 60, behaviours={10: ["blink"]}):
        frames.append(stream.step(cond)[0])
        edges.append(stream.lid_edges())
    return frames[9], frames[12], stream.rig, edges[12]


def test_a_closed_blink_hides_the_iris_and_the_pupil(blink) -> None:
    open_frame, closed_frame, rig, _ = blink
    r = rig.iris_radius
    up = -rig.axes[1]
    for centre, (upper, lower) in zip(rig.irises, _EYES):
        # Reference: the lid's skin, just above the eye in the open frame.
        skin = float(np.median(luma(_disc(open_frame, centre + up * (r * 1.9), r * 0.5))))
        # The iris and pupil above the lash line (where the closed lids meet): lid skin,
        # no dark dot.
        iris = centre + up * (r * 0.3)
        dark_open = np.mean(luma(_disc(open_frame, iris, r * 0.65)) < 0.45 * skin)
        dark_closed = np.mean(luma(_disc(closed_frame, iris, r * 0.65)) < 0.45 * skin)
        print(f"iris disc dark fraction: open {dark_open:.2f}, closed {dark_closed:.2f}")
        assert dark_open > 0.2
        assert dark_closed < 0.25 * dark_open
        # Between the lids' landmarks, the dark area drops to that of the lash line.
        eye = polygon_mask(open_frame.shape, rig.vertices[list(upper)], rig.vertices[list(lower)])
        dark = [float((luma(f)[eye] < 0.45 * skin).sum()) for f in (open_frame, closed_frame)]
        assert dark[1] < 0.65 * dark[0]


def test_a_closed_lid_has_one_smooth_edge(blink) -> None:
    """Along the closed lid's edge the picture varies smoothly. Sampled on lines parallel
    to the edge (every 0.5 px along it, from 2 px above to 2 px below), the luma changes
    from one sample to the next along the lid far less than from one line to the next
    across it; an edge made of pixel-row steps changes as sharply along as across."""
    _, closed_frame, _, edges = blink
    y = luma(closed_frame)
    for edge in edges:
        inner = edge[6:-6]  # away from the corners, where the lids meet in the photo already
        length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(inner, axis=0), axis=1))])
        s = np.arange(0.0, length[-1], 0.5)
        points = np.stack([np.interp(s, length, inner[:, 0]), np.interp(s, length, inner[:, 1])], 1)
        tangent = np.gradient(points, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
        lines = []
        for offset in np.arange(-2.0, 2.01, 0.5):
            q = (points + offset * normal).astype(np.float32)
            lines.append(cv2.remap(y, q[:, 0:1], q[:, 1:2], cv2.INTER_LINEAR)[:, 0])
        grid = np.array(lines)
        along = float(np.percentile(np.abs(np.diff(grid, axis=1)).max(0), 98))
        across = float(np.percentile(np.abs(np.diff(grid, axis=0)), 98))
        print(f"closed lid edge: along {along:.1f}, across {across:.1f} (levels per 0.5 px, p98)")
        assert along < 0.55 * across


def _disc(frame: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    h, w = frame.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    inside = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
    return frame[inside]


# -- motion --------------------------------------------------------------------------


def test_silence_is_calm_and_listening_looks_different(engine, identity, vowels) -> None:
    clip, speech = vowels
    n_speech = int(clip.duration_s * OPTIONS.fps)
    frames, _, stream = run(engine, identity, n_speech, speech=speech, phonemes=clip.phonemes)
    x0, y0, x1, y1 = stream.rig.roi
    idle, _, _ = run(engine, identity, 150)

    def motion(fs: list[np.ndarray]) -> float:
        ys = [luma(f[y0:y1, x0:x1]) for f in fs]
        return float(np.mean([np.abs(a - b).mean() for a, b in zip(ys[1:], ys[:-1])]))

    speaking_motion, idle_motion = motion(frames), motion(idle[25:])
    print(f"frame-to-frame change: speaking {speaking_motion:.3f}, idle {idle_motion:.3f}")
    assert speaking_motion > 3 * idle_motion
    box = mouth_box(identity, OPTIONS)
    base = rest_aperture(engine, identity)
    assert max(mouth_aperture(f, box) for f in idle) < base + 1.0

    listen = np.zeros(150 * 640 + 4000, np.float32)
    listen[: len(speech)] = speech * 0.5
    listening, _, _ = run(engine, identity, 150, listen=listen)
    change = float(np.mean([np.abs(luma(a) - luma(b))[y0:y1, x0:x1].mean() for a, b in zip(listening[40:], idle[40:])]))
    print(f"listening vs idle: mean difference {change:.2f}")
    assert change > 1.0
    assert max(mouth_aperture(f, box) for f in listening) < base + 1.0


def test_low_frame_rate_and_skipped_frames_stay_bounded(engine, identity, vowels) -> None:
    clip, speech = vowels
    slow = StreamOptions(fps=10.0, seed=3)
    n = int(clip.duration_s * 10)
    neutral, _ = canvas_rig(identity.data, slow)
    box = mouth_box(identity, slow)
    base = rest_aperture(engine, identity, slow)
    for indices in (None, sorted(set(range(0, n, 1)) - set(range(5, n, 7)) - set(range(6, n, 7)) - set(range(7, n, 7)))):
        frames, _, stream = run(engine, identity, n, options=slow, indices=indices, speech=speech, phonemes=clip.phonemes)
        x0, y0, x1, y1 = stream.rig.roi
        worst = max(np.abs(luma(f) - luma(neutral))[y0:y1, x0:x1].mean() for f in frames)
        apertures = [mouth_aperture(f, box) - base for f in frames]
        assert worst < 25, "the face drifted far from the photo"
        assert max(apertures) > 1.0 and max(apertures) < 0.5 * (box[3] - box[1])
