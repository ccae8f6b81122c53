"""Animation, measured from the frames' pixels (after a real H.264 round trip where it
matters), never from the engine's internals."""

from __future__ import annotations

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, StreamOptions
from avatar_node.engines.portrait import topology as topo
from avatar_node.engines.portrait.drive import frame_conditions
from avatar_node.engines.portrait.engine import canvas_rig
from avatar_node.engines.portrait.evaluation import (
    eye_boxes,
    mouth_aperture,
    mouth_box,
    region_change,
)

from .conftest import OPTIONS, h264_round_trip
from .helpers import polygon_mask, rest_aperture

LOOKAHEAD = 60


def render(engine, identity, n_frames, options=OPTIONS, **drive):
    stream = engine.open(identity, options)
    try:
        return [stream.step(c)[0] for c in frame_conditions(n_frames, options.fps, LOOKAHEAD, **drive)]
    finally:
        stream.close()


def speech_envelope(speech: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """RMS of the speech over each frame's span (what a listener hears with that frame)."""
    hop = SPEECH_SAMPLE_RATE / fps
    out = np.zeros(n_frames)
    for k in range(n_frames):
        seg = speech[int(k * hop) : int((k + 1) * hop)]
        out[k] = np.sqrt(np.mean(seg**2)) if len(seg) else 0.0
    return out


def test_frames_are_canvas_sized_rgb_and_deterministic(engine, identity, sentence) -> None:
    _, speech = sentence
    a = render(engine, identity, 20, speech=speech)
    b = render(engine, identity, 20, speech=speech)
    c = render(engine, identity, 20, options=StreamOptions(seed=OPTIONS.seed + 1), speech=speech)
    for frame in a:
        assert frame.shape == (480, 848, 3) and frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_background_far_from_the_face_never_moves(engine, identity, sentence, sample_rgb) -> None:
    _, speech = sentence
    frames = render(engine, identity, 60, speech=speech, behaviours={5: ["nod"], 20: ["shake"]})
    canvas, _ = canvas_rig(identity.data, OPTIONS)
    x0, _, x1, _ = mouth_box(identity, OPTIONS)
    face_w = x1 - x0
    left, right = max(0, x0 - 3 * face_w), min(848, x1 + 3 * face_w)
    for frame in frames:
        assert np.array_equal(frame[:, :left], canvas[:, :left])
        assert np.array_equal(frame[:, right:], canvas[:, right:])
    # ... while the face itself does move.
    assert max(np.abs(f.astype(int) - frames[0]).max() for f in frames) > 40


def test_mouth_aperture_on_decoded_frames_follows_the_speech(engine, identity, sentence) -> None:
    clip, speech = sentence
    n = int(clip.duration_s * OPTIONS.fps) + 10
    frames = h264_round_trip(render(engine, identity, n, speech=speech))
    box = mouth_box(identity, OPTIONS)
    aperture = np.array([mouth_aperture(f, box) for f in frames])
    envelope = speech_envelope(speech, n, OPTIONS.fps)
    r = float(np.corrcoef(aperture, envelope)[0, 1])
    print(f"mouth aperture vs speech envelope (audio-driven, H.264 decoded): r = {r:.2f}")
    assert r > 0.6
    # In sync: the best match of the mouth to the sound is at a shift of 0 +- 1 frame.
    shifts = range(-4, 5)
    scores = [np.corrcoef(aperture[max(s, 0) : n + min(s, 0)], envelope[max(-s, 0) : n - max(s, 0)])[0, 1] for s in shifts]
    lag = list(shifts)[int(np.argmax(scores))]
    print(f"best lag of the mouth after the sound: {lag:+d} frames")
    assert abs(lag) <= 1
    # Loud frames open the mouth well beyond the photo's own dark lines; quiet ones do not.
    opening = aperture - rest_aperture(engine, identity)
    loud = envelope > np.percentile(envelope, 70)
    quiet = envelope < 1e-3
    assert opening[loud].mean() > 3 * max(opening[quiet].mean(), 0.5)


def test_silence_keeps_the_mouth_closed_and_still_and_the_eyes_blink(engine, identity) -> None:
    n = 200  # 8 s
    frames = h264_round_trip(render(engine, identity, n))
    box = mouth_box(identity, OPTIONS)
    aperture = np.array([mouth_aperture(f, box) for f in frames]) - rest_aperture(engine, identity)
    assert aperture.max() < 1.0, aperture.max()
    assert aperture.std() < 0.4
    # Blinks: brief drops of the dark area (iris, pupil) between the lids of both eyes.
    openness = np.array([eye_darkness(f, identity) for f in frames])
    closed = openness < 0.8 * np.median(openness)
    blinks = int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])
    print(f"blinks in 8 s of silence: {blinks}")
    assert 1 <= blinks <= 6
    # Each blink is short: no eye stays closed for more than half a second.
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], closed.astype(int), [0]]))))[::2]
    assert runs.max() <= 12


def eye_darkness(frame: np.ndarray, identity) -> float:  # type: ignore[no-untyped-def]
    """Dark pixels (iris, pupil, lashes) between the lids' landmarks of both eyes."""
    rig = canvas_rig(identity.data, OPTIONS)[1]
    y = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    total = 0.0
    for upper, lower in ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER), (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER)):
        eye = polygon_mask(frame.shape, rig.vertices[list(upper)], rig.vertices[list(lower)], erode=-1)
        total += float((y[eye] < 0.5 * np.percentile(y[eye], 90)).sum())
    return total


def test_text_driven_closed_consonants_close_the_lips_and_open_vowels_open_them(engine, identity) -> None:
    from avatar_node.engines.portrait.drive import resample_to_speech_rate
    from avatar_node.speech.tts import SpeechSynthesizer

    with SpeechSynthesizer() as tts:
        clip = tts.synthesize("Mama, papa, baby bob. Mama, papa, mop.")
    speech = resample_to_speech_rate(clip.samples, clip.sample_rate)
    n = int(clip.duration_s * OPTIONS.fps) + 5
    frames = h264_round_trip(render(engine, identity, n, speech=speech, phonemes=clip.phonemes))
    box = mouth_box(identity, OPTIONS)
    aperture = np.array([mouth_aperture(f, box) for f in frames]) - rest_aperture(engine, identity)

    def frames_in(symbols: set[str]) -> list[int]:
        picked = []
        for p in clip.phonemes:
            if p.phoneme in symbols:
                mid = (p.start_s + p.end_s) / 2
                picked.append(min(n - 1, int(round(mid * OPTIONS.fps))))
        return picked

    closed = aperture[frames_in({"m", "b", "p"})]
    opened = aperture[frames_in({"a", "a:", "A", "A:", "0", "O", "aa"})]
    print(f"aperture at m/b/p: {closed.mean():.2f} px; at open vowels: {opened.mean():.2f} px")
    assert len(closed) >= 6 and len(opened) >= 4
    assert np.median(closed) < 0.5
    assert opened.mean() > 1.0 and opened.mean() > 4 * max(closed.mean(), 0.1)


def test_nod_behaviour_moves_the_head(engine, identity) -> None:
    plain = render(engine, identity, 15)
    nod = render(engine, identity, 15, behaviours={0: ["nod"]})
    eyes = eye_boxes(identity, OPTIONS)
    moved = max(region_change(a, b, eyes[0]) for a, b in zip(plain, nod))
    assert moved > 2.0


def test_reset_speech_lets_the_mouth_close(engine, identity, sentence) -> None:
    _, speech = sentence
    stream = engine.open(identity, OPTIONS)
    conds = list(frame_conditions(60, OPTIONS.fps, LOOKAHEAD, speech=speech[: SPEECH_SAMPLE_RATE * 2]))
    for c in conds[:25]:
        stream.step(c)
    stream.reset_speech()
    box = mouth_box(identity, OPTIONS)
    base = rest_aperture(engine, identity)
    after = [mouth_aperture(stream.step(c)[0], box) - base for c in conds[50:60]]  # silence
    assert max(after[3:]) < 1.0


def test_an_interrupt_shuts_the_mouth_at_once_and_it_stays_shut(engine, identity, sentence):
    """Barge-in as a viewer sees it: the frame after the interrupt shows the mouth closing, it
    is shut within two frames, and it never opens again in the silence after (pixels: the dark
    opening beyond the face at rest), wherever in a syllable the interrupt lands."""
    clip, speech = sentence
    box = mouth_box(identity, OPTIONS)
    rest = rest_aperture(engine, identity)
    talking = list(frame_conditions(60, OPTIONS.fps, LOOKAHEAD, speech=speech))
    silent = list(frame_conditions(30, OPTIONS.fps, LOOKAHEAD))
    probe = engine.open(identity, OPTIONS)
    try:
        opening = [mouth_aperture(probe.step(c)[0], box) - rest for c in talking]
    finally:
        probe.close()
    # Interrupt where the mouth is opening fastest (its momentum would carry it further open).
    cut = int(np.argmax(np.diff(opening[10:]))) + 11
    stream = engine.open(identity, OPTIONS)
    try:
        before = [mouth_aperture(stream.step(c)[0], box) - rest for c in talking[: cut + 1]]
        stream.reset_speech()
        after = [mouth_aperture(stream.step(c)[0], box) - rest for c in silent]
    finally:
        stream.close()
    print(f"interrupt at frame {cut}: open {before[-1]:.1f}, then {', '.join(f'{a:.1f}' for a in after[:4])}")
    assert before[-1] > 3.0, "the interrupt should land on an open mouth"
    assert after[0] < before[-1], "the frame after the interrupt does not close the mouth"
    assert after[1] < 1.0, f"not shut two frames after the interrupt ({after[1]:.1f})"
    assert max(after[1:]) < 1.0, "the mouth opened again in silence"
