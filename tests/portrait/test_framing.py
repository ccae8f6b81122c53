"""Where the photo sits in the frame, and what fills the rest: a head-and-shoulders shot
that keeps the top of the head, bars beside a narrow photo without seam or streaks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait.drive import frame_conditions
from avatar_node.engines.portrait.framing import FACE_SHARE_RANGE, frame_placement
from avatar_node.media.canvas import fit_into_canvas

from .conftest import OPTIONS, to_jpeg
from .helpers import LOOKAHEAD


def _first_frame(engine, identity, options=OPTIONS) -> np.ndarray:  # type: ignore[no-untyped-def]
    return engine.open(identity, options).step(next(frame_conditions(1, options.fps, LOOKAHEAD)))[0]


def _placement(identity, options=OPTIONS):  # type: ignore[no-untyped-def]
    data = identity.data
    (x0, y0), (x1, y1) = data.points[:, :2].min(0), data.points[:, :2].max(0)
    h, w = data.image.shape[:2]
    return frame_placement((w, h), (x0, y0, x1, y1), (options.width, options.height), options.framing)


@pytest.fixture(scope="module")
def big_portrait(sample_rgb) -> bytes:
    """A 1024x1200 head-and-shoulders photo (the sample, enlarged)."""
    big = cv2.resize(sample_rgb, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    return to_jpeg(big, quality=95)


def test_auto_framing_puts_a_head_and_shoulders_face_at_the_stated_height(engine, big_portrait) -> None:
    ident = engine.prepare(big_portrait)
    frame = _first_frame(engine, ident)
    found = engine.prepare(to_jpeg(frame)).face
    share = found.height / OPTIONS.height
    centre_x = (found.x + found.width / 2) / OPTIONS.width
    print(f"face height {share:.2f} of the frame, centre at {centre_x:.2f} of the width, top at {found.y:.0f} px")
    assert FACE_SHARE_RANGE[0] <= share <= FACE_SHARE_RANGE[1]
    assert 0.4 < centre_x < 0.6
    assert found.y > 0.1 * OPTIONS.height  # headroom above the forehead

    fit = _first_frame(engine, ident, StreamOptions(framing="fit"))
    whole = engine.prepare(to_jpeg(fit)).face
    assert whole.height / OPTIONS.height < 0.8 * share  # the whole photo: a smaller face


def test_the_top_of_the_head_stays_in_the_frame(engine, identity, sample_rgb) -> None:
    """The sample wears a cap that reaches half a face height above her forehead; the
    frame keeps all of it. Where the cap begins is read from the photo's pixels: the first
    row above the face, over its middle, that is no longer the plain background."""
    data = identity.data
    x0, x1 = data.points[:, 0].min(), data.points[:, 0].max()
    face_top = int(data.points[:, 1].min())
    middle = sample_rgb[:face_top, int(x0 + (x1 - x0) / 3) : int(x1 - (x1 - x0) / 3)].astype(np.float32)
    background = np.median(sample_rgb[:20, -60:].reshape(-1, 3).astype(np.float32), axis=0)
    differs = np.linalg.norm(middle - background, axis=2).mean(axis=1) > 60
    head_top = int(np.flatnonzero(differs)[0])
    assert head_top < face_top - 0.3 * (data.points[:, 1].max() - face_top), "the sample's cap should be tall"
    placement = _placement(identity)
    top_in_frame = head_top * placement.scale + placement.offset_y
    print(f"top of the head at {head_top} px in the photo, {top_in_frame:.0f} px in the frame")
    assert top_in_frame >= 0.02 * OPTIONS.height - 1


def test_bars_beside_a_narrow_photo_have_no_seam(engine, identity) -> None:
    # The sample (512x600) framed head-and-shoulders is narrower than the frame: bars fill
    # the sides. Across the photo's edge the picture changes no more than it does between
    # neighbouring columns inside the photo.
    left, _, right, _ = _placement(identity).covered(OPTIONS.width, OPTIONS.height)
    assert left > 40, "the sample should need a bar on the left"
    frame = _first_frame(engine, identity).astype(np.float32)
    steps = np.abs(np.diff(frame, axis=1)).mean(axis=(0, 2))  # steps[i]: between columns i and i+1
    at_edge = steps[left - 3 : left + 2].max()
    inside = np.percentile(steps[left + 10 : right - 10], 90)
    in_bar = steps[: left - 3].max()
    print(f"step across the photo's edge {at_edge:.2f}; inside the photo (p90) {inside:.2f}; in the bar {in_bar:.2f}")
    assert at_edge <= inside
    assert in_bar <= inside


def _vertical_over_horizontal(region: np.ndarray) -> float:
    """Energy of the vertical gradient over that of the horizontal one (a horizontal
    streak is all vertical gradient)."""
    y = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    return float((gy**2).sum() / max((gx**2).sum(), 1e-6))


def test_bars_have_no_streaks(engine, identity) -> None:
    """The left bar holds the flag beside the sample: its vertical-to-horizontal gradient
    energy stays within 2x of the flag's own in the photo (stretching the edge column
    sideways turns stars into horizontal streaks: all vertical gradient)."""
    left, top, right, bottom = _placement(identity).covered(OPTIONS.width, OPTIONS.height)
    frame = _first_frame(engine, identity)
    bar = frame[:, 4 : left - 4]
    photo = frame[:, left + 4 : left + 4 + bar.shape[1]]
    in_bar, in_photo = _vertical_over_horizontal(bar), _vertical_over_horizontal(photo)
    print(f"vertical/horizontal gradient energy: bar {in_bar:.2f}, the photo beside it {in_photo:.2f}")
    assert 0.5 < in_bar / in_photo < 2.0


def test_fit_into_canvas_fills_bars_from_the_picture_without_a_seam_or_streaks(sample_rgb) -> None:
    # The node letterboxes frames of another size with this; the sample (512x600) becomes
    # 410x480 in the middle of 848x480.
    canvas, placement = fit_into_canvas(sample_rgb, 848, 480)
    x0, _, x1, _ = placement.covered(848, 480)
    assert canvas.shape == (480, 848, 3) and 150 < x0 < 300
    steps = np.abs(np.diff(canvas.astype(np.float32), axis=1)).mean(axis=(0, 2))
    inside = np.percentile(steps[x0 + 5 : x1 - 5], 90)
    assert steps[x0 - 2 : x0 + 1].max() <= inside and steps[x1 - 2 : x1 + 1].max() <= inside
    # The bars continue the picture's colours (not black, not a copy of the picture).
    assert abs(float(canvas[:, x0 - 1].mean()) - float(canvas[:, x0].mean())) < 3
    assert canvas[:, : x0 - 40].std(axis=1).mean() < canvas[:, x0:x1].std(axis=1).mean()
    ratio = _vertical_over_horizontal(canvas[:, 4 : x0 - 4]) / _vertical_over_horizontal(canvas[:, x0 + 4 : 2 * x0 - 4])
    assert 0.5 < ratio < 2.0


def test_unknown_framing_is_refused_clearly(engine, identity) -> None:
    with pytest.raises(ValueError, match="framing must be one of auto, fit"):
        engine.open(identity, StreamOptions(framing="zoom"))
