"""Preparing identities: faces found at any size, clear refusals for unusable input."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from avatar_node.engines.base import AvatarInputError, StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.evaluation import mouth_box

from .conftest import OPTIONS, to_jpeg


def test_sample_photo_has_one_face_where_the_face_is(identity, sample_rgb) -> None:
    assert identity.engine == "portrait"
    assert identity.faces_found == 1
    assert (identity.image_width, identity.image_height) == (sample_rgb.shape[1], sample_rgb.shape[0])
    box = identity.face
    # Her face: roughly centred, about a third of the picture wide.
    assert 0.2 < box.width / identity.image_width < 0.45
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    assert 0.35 < cx / identity.image_width < 0.65
    assert 0.25 < cy / identity.image_height < 0.6


def test_mouth_box_is_inside_the_face_on_the_canvas(identity) -> None:
    x0, y0, x1, y1 = mouth_box(identity, OPTIONS)
    assert 0 <= x0 < x1 <= OPTIONS.width and 0 <= y0 < y1 <= OPTIONS.height
    # Below the middle of the frame's face and narrower than the face.
    assert 10 < x1 - x0 < 200 and 10 < y1 - y0 < 150


def test_photo_without_a_face_is_refused(engine) -> None:
    rng = np.random.default_rng(1)
    landscape = cv2.GaussianBlur(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), (0, 0), 6)
    landscape[200:] = (60, 120, 40)
    with pytest.raises(AvatarInputError, match="No face"):
        engine.prepare(to_jpeg(landscape))


@pytest.mark.parametrize("payload", [b"", b"GIF89a not really", b"%PDF-1.4\n" + bytes(200)])
def test_bytes_that_are_not_a_picture_are_refused(engine, payload: bytes) -> None:
    with pytest.raises(AvatarInputError, match="(empty|could not be read)"):
        engine.prepare(payload)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size; the pixel data is a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_oversized_photo_is_refused_from_its_header(engine) -> None:
    with pytest.raises(AvatarInputError, match="megapixels"):
        engine.prepare(_png_header_only(20_000, 20_000))


def test_tiny_face_on_a_big_plain_canvas_works(engine, smile_rgb) -> None:
    # The smiling photo's face is ~95 px wide; scaled so it is ~120 px on a 2560x1440 backdrop.
    small = cv2.resize(smile_rgb, None, fx=1.25, fy=1.25, interpolation=cv2.INTER_AREA)
    big = np.full((1440, 2560, 3), (205, 210, 215), np.uint8)
    big[900 : 900 + small.shape[0], 1900 : 1900 + small.shape[1]] = small
    ident = engine.prepare(to_jpeg(big))
    assert ident.faces_found == 1
    assert 90 < ident.face.width < 170
    assert 1900 < ident.face.x < 1900 + small.shape[1]
    frame = engine.open(ident, StreamOptions(seed=1)).step(_silent())[0]
    assert frame.shape == (480, 848, 3)


def test_huge_face_filling_the_frame_works(engine, smile_rgb) -> None:
    face = smile_rgb[45:175, 100:212]  # forehead to chin, cheek to cheek
    huge = cv2.resize(face, (896, 1040), interpolation=cv2.INTER_CUBIC)
    ident = engine.prepare(to_jpeg(huge))
    assert ident.faces_found == 1
    assert ident.face.width > 0.7 * 896
    frames = [engine.open(ident, StreamOptions(seed=1)).step(_silent())[0] for _ in range(2)]
    assert frames[0].shape == (480, 848, 3)


def test_several_faces_the_largest_is_chosen_and_all_are_counted(engine, smile_rgb) -> None:
    group = np.full((700, 1200, 3), (200, 200, 205), np.uint8)
    big = cv2.resize(smile_rgb, None, fx=1.5, fy=1.5)
    small = cv2.resize(smile_rgb, None, fx=0.8, fy=0.8)
    group[100 : 100 + big.shape[0], 620 : 620 + big.shape[1]] = big
    group[250 : 250 + small.shape[0], 60 : 60 + small.shape[1]] = small
    ident = engine.prepare(to_jpeg(group))
    assert ident.faces_found == 2
    assert ident.face.x > 600  # the big face on the right
    assert ident.face.width > 1.5 * 0.8 * 95


def test_engine_is_constructible_without_arguments_and_declares_itself() -> None:
    engine = PortraitEngine()
    assert engine.info.name == "portrait"
    assert engine.info.frames_per_step == 1 and engine.info.native_fps == 25
    assert 0 < engine.info.audio_lookahead_ms <= 80
    assert {"nod", "smile", "blink"} <= engine.behaviours


def _silent():
    from avatar_node.engines.base import Conditioning

    n = 1600
    return Conditioning(speech=np.zeros(n, np.float32), speaking=[False], listen=np.zeros(n, np.float32))
