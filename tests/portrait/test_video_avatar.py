"""Clip avatars: a video of the person becomes an avatar that idles on its own motion and
speaks with its own mouths. What a viewer would see is measured: no jump beyond the clip's
own motion, no loop, no seam at the blend's edge, mouths that follow the speech."""

from __future__ import annotations

import hashlib
import io
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from avatar_node.engines.base import AvatarInputError, Identity, StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.clip_avatar import ClipIdentityData
from avatar_node.engines.portrait.clip_decode import decode_clip, looks_like_video
from avatar_node.engines.portrait.clip_stream import ClipStream
from avatar_node.engines.portrait.drive import frame_conditions, resample_to_speech_rate
from avatar_node.pipeline.identities import estimate_bytes
from avatar_node.speech.tts import SpeechSynthesizer

from .clip_media import SyntheticClip, bad_clip, real_clip, synthetic_clip

SMALL = StreamOptions(width=424, height=240, fps=25.0, seed=5)


@pytest.fixture(scope="module")
def synthetic() -> SyntheticClip:
    return synthetic_clip()


@pytest.fixture(scope="module")
def synthetic_avatar(engine: PortraitEngine, synthetic: SyntheticClip) -> Identity:
    return engine.prepare(synthetic.data)


@pytest.fixture(scope="module")
def carphone_avatar(engine: PortraitEngine) -> Identity:
    return engine.prepare(real_clip("carphone"))


@pytest.fixture(scope="module")
def held_out_speech() -> np.ndarray:
    """A voice and text the synthetic clip never says."""
    with SpeechSynthesizer() as tts:
        clip = tts.synthesize(
            "Bright copper kettles boil while the quiet garden waits. Maybe tomorrow the weather will "
            "open a window, and purple shadows will fall across the hills.",
            voice="en-gb+m3",
        )
    return resample_to_speech_rate(np.asarray(clip.samples), clip.sample_rate)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def test_videos_are_recognised_by_their_bytes(sample_bytes: bytes, synthetic: SyntheticClip) -> None:
    assert looks_like_video(synthetic.data)
    assert looks_like_video(b"\x1a\x45\xdf\xa3" + b"\x00" * 20)  # Matroska / WebM
    assert looks_like_video(b"RIFF\x00\x00\x00\x00AVI LIST")
    assert not looks_like_video(sample_bytes)
    assert not looks_like_video(b"RIFF\x00\x00\x00\x00WEBPVP8 ")


def test_a_clip_avatar_is_prepared_and_opens_at_once(engine: PortraitEngine, synthetic_avatar: Identity) -> None:
    data = synthetic_avatar.data
    assert isinstance(data, ClipIdentityData)
    assert synthetic_avatar.engine == "portrait" and synthetic_avatar.faces_found == 1
    assert len(data.library) >= 0.95 * len(data.base)  # the synthetic clip is usable throughout
    # The node's avatar cache counts a clip's frames and mouths against its byte budget.
    assert estimate_bytes(data) >= data.base.nbytes + data.library.patches.nbytes
    t0 = time.perf_counter()
    stream = engine.open(synthetic_avatar, StreamOptions(width=640, height=360, fps=25.0))
    opened_ms = (time.perf_counter() - t0) * 1e3
    assert isinstance(stream, ClipStream)
    print(f"open: {opened_ms:.1f} ms")
    assert opened_ms < 50


def test_rotation_and_variable_frame_rate_are_honoured() -> None:
    """A clip recorded sideways with irregular frame times plays upright at its true pace."""
    buffer = io.BytesIO()
    times_ms = np.cumsum([0] + [20, 60] * 30)  # 40 ms on average, never 40
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=50)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        stream.options = {"bf": "0", "preset": "ultrafast"}
        stream.set_display_rotation(90)
        for k, t in enumerate(times_ms):
            picture = np.zeros((64, 96, 3), np.uint8)
            picture[:16, :16] = 255  # a mark in the stored top-left corner
            picture[40:, :, 1] = min(4 * k, 255)  # frame number, in green
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    clip = decode_clip(buffer.getvalue())
    first = clip.frames[0]
    assert first.shape[:2] == (96, 64), "the display rotation was not applied"
    # Rotated 90 degrees counterclockwise, the stored top-left corner is now bottom-left.
    assert first[-12:, :12].mean() > 200 and first[:12, :12].mean() < 50
    assert abs(clip.seconds - (times_ms[-1] + 60) / 1000) <= 0.04
    # Each 40 ms tick shows the frame that started at or before it.
    for tick, frame in enumerate(clip.frames[:-1]):
        expected = int(np.searchsorted(times_ms, tick * 40, side="right")) - 1
        green = float(frame[:, -16:, 1].mean())  # the green band: the right-hand columns once upright
        assert abs(green - min(4 * expected, 255)) < 6, (tick, green, expected)


def test_selection_follows_the_target_mouth(
    engine: PortraitEngine, synthetic: SyntheticClip, synthetic_avatar: Identity, held_out_speech: np.ndarray
) -> None:
    """On the synthetic clip every frame's true opening is known: the mouths chosen for a held-out
    utterance must open as the target asks."""
    data = synthetic_avatar.data
    measured = data.library.descriptors[:, 0]
    truth = synthetic.opening[data.library.source]
    assert np.corrcoef(measured, truth)[0, 1] > 0.9, "the library's opening descriptor is wrong"
    stream = engine.open(synthetic_avatar, SMALL)
    assert isinstance(stream, ClipStream)
    n = int(len(held_out_speech) / 16000 * 25) + 10
    target, chosen = [], []
    for cond in frame_conditions(n, 25.0, engine.info.audio_lookahead_ms, speech=held_out_speech):
        stream.step(cond)
        target.append(stream.last_target_opening)
        chosen.append(stream.last_entry)
    target_a = np.array(target)
    got_measured = measured[chosen]
    got_true = synthetic.opening[data.library.source[chosen]]
    span = float(np.percentile(measured, 95) - np.percentile(measured, 5))
    error = float(np.mean(np.abs(got_measured - target_a))) / span
    corr = float(np.corrcoef(got_true, target_a)[0, 1])
    switches = float(np.mean(np.diff(chosen) != 1))
    print(
        f"selection: mean |chosen - target| opening = {error:.1%} of the clip's range; correlation of the "
        f"chosen frames' true opening with the target {corr:.2f}; non-consecutive choices {switches:.0%}"
    )
    assert error < 0.2
    assert corr > 0.8
    # Near-equal candidates do not make the mouth flicker: no A-B-A within two frames.
    flicker = sum(1 for a, b, c in zip(chosen, chosen[1:], chosen[2:]) if a == c and a != b)
    assert flicker <= 0.02 * len(chosen), flicker


def _idle(engine: PortraitEngine, identity: Identity, seconds: float) -> list[np.ndarray]:
    stream = engine.open(identity, SMALL)
    n = int(seconds * SMALL.fps)
    return [stream.step(c)[0] for c in frame_conditions(n, SMALL.fps, engine.info.audio_lookahead_ms)]


def _clip_steps(identity: Identity) -> np.ndarray:
    """The clip's own consecutive-frame changes, placed on the same canvas."""
    data = identity.data
    stream = ClipStream(data, SMALL)
    placed = [_luma(stream._place(data.base_rgb(i))) for i in range(len(data.base))]
    source = data.library.source[data.base_entry]
    pairs = [(i, i + 1) for i in range(len(source) - 1) if source[i + 1] == source[i] + 1]
    return np.array([np.mean(np.abs(placed[i] - placed[j])) for i, j in pairs])


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["carphone", "synthetic"])
def test_idle_plays_a_minute_without_jumps_or_loops(
    engine: PortraitEngine, clip: str, carphone_avatar: Identity, synthetic_avatar: Identity
) -> None:
    identity = carphone_avatar if clip == "carphone" else synthetic_avatar
    frames = _idle(engine, identity, 60.0)
    own = _clip_steps(identity)
    limit = float(np.percentile(own, 99))
    lumas = [_luma(f) for f in frames]
    steps = np.array([np.mean(np.abs(a - b)) for a, b in zip(lumas, lumas[1:])])
    print(f"{clip} idle: largest step {steps.max():.2f}, p99 {np.percentile(steps, 99):.2f}; clip p99 {limit:.2f}")
    assert steps.max() <= limit, f"a jump of {steps.max():.2f} at frame {int(steps.argmax())} (clip p99 {limit:.2f})"
    # No 2 s stretch of output comes back within 20 s.
    digest = [hashlib.blake2b(f.tobytes(), digest_size=8).digest() for f in frames]
    window, horizon = 50, 500
    seen: dict[bytes, int] = {}
    for start in range(len(digest) - window + 1):
        key = b"".join(digest[start : start + window])
        if key in seen:
            assert start - seen[key] > horizon, f"frames {seen[key]}.. repeat at {start}"
        seen[key] = start


def _seam_ratio(engine: PortraitEngine, identity: Identity, speech: np.ndarray, hard: bool) -> float:
    """Mean gradient across the blend mask's edge in the output, over the same in the clip's own
    pixels there (1 = the edge cannot be told from the picture)."""
    stream = ClipStream(identity.data, StreamOptions(width=848, height=480, fps=25.0, seed=3), hard_mask=hard)
    out_grad, own_grad = [], []
    n = int(len(speech) / 16000 * 25)
    for cond in frame_conditions(n, 25.0, engine.info.audio_lookahead_ms, speech=speech):
        frame = stream.step(cond)[0]
        rec = stream.last_blend
        if rec is None:
            continue
        h, w = rec.alpha.shape
        edge = (rec.alpha > 0.35) & (rec.alpha < 0.65)
        if edge.sum() < 20:
            continue
        # Across the edge: along the mask's own gradient.
        ay, ax = np.gradient(rec.alpha)
        norm = np.hypot(ax, ay)[edge] + 1e-9
        nx, ny = ax[edge] / norm, ay[edge] / norm
        out = _luma(frame[rec.y0 : rec.y0 + h, rec.x0 : rec.x0 + w])
        base = _luma(rec.base)
        for picture, bucket in ((out, out_grad), (base, own_grad)):
            gy, gx = np.gradient(picture)
            bucket.append(float(np.mean(np.abs(gx[edge] * nx + gy[edge] * ny))))
    return float(np.mean(out_grad) / np.mean(own_grad))


@pytest.mark.slow
def test_no_seam_at_the_blend_edge_and_a_hard_mask_is_caught(
    engine: PortraitEngine, carphone_avatar: Identity, held_out_speech: np.ndarray
) -> None:
    speech = held_out_speech[: 16000 * 5]
    soft = _seam_ratio(engine, carphone_avatar, speech, hard=False)
    hard = _seam_ratio(engine, carphone_avatar, speech, hard=True)
    print(f"carphone seam: gradient across the mask edge / the clip's own there: feathered {soft:.2f}, hard {hard:.2f}")
    assert soft <= 1.0, "the blend's edge shows"
    assert hard > 1.1, "the seam measure cannot see a hard mask's edge"


def test_a_short_clip_works_with_a_note(carphone_avatar: Identity) -> None:
    data = carphone_avatar.data
    assert data.notes and "30-120 s" in data.notes[0]
    assert 3.0 <= data.usable_s < 20.0


@pytest.mark.parametrize(
    "case, reason, words",
    [
        ("no face", "NO_FACE", "No face"),
        ("two faces", "SEVERAL_FACES", "more than one face"),
        ("too short", "TOO_LITTLE_FACE", "record at least 3 s"),
        ("too large", "CLIP_TOO_LARGE", "the limit is 16 MB"),
        ("too long", "CLIP_TOO_LONG", "the limit is 180 s"),
        ("unreadable", "BAD_CLIP", "could not be read"),
    ],
)
def test_unusable_clips_are_refused_with_a_fix(
    engine: PortraitEngine, synthetic: SyntheticClip, case: str, reason: str, words: str
) -> None:
    with pytest.raises(AvatarInputError) as caught:
        engine.prepare(bad_clip(case, synthetic))
    assert caught.value.reason == reason, str(caught.value)
    assert words in str(caught.value), str(caught.value)


def test_a_nod_moves_the_head_and_barge_in_closes_the_mouth(
    engine: PortraitEngine, synthetic_avatar: Identity, held_out_speech: np.ndarray
) -> None:
    lookahead = engine.info.audio_lookahead_ms
    plain = engine.open(synthetic_avatar, SMALL)
    nodding = engine.open(synthetic_avatar, SMALL)
    quiet = list(frame_conditions(30, SMALL.fps, lookahead))
    asked = list(frame_conditions(30, SMALL.fps, lookahead, behaviours={8: ["nod"]}))
    change = [float(np.mean(np.abs(_luma(plain.step(a)[0]) - _luma(nodding.step(b)[0])))) for a, b in zip(quiet, asked)]
    assert max(change[:8]) == 0.0 and max(change[10:25]) > 1.0, change

    stream = engine.open(synthetic_avatar, SMALL)
    assert isinstance(stream, ClipStream)
    talking = list(frame_conditions(40, SMALL.fps, lookahead, speech=held_out_speech))
    for cond in talking:
        stream.step(cond)
    stream.reset_speech()  # barge-in: the rest of the turn is dropped
    dark = synthetic_avatar.data.library.descriptors[:, 5]
    closed_enough = float(np.percentile(dark, 40))
    shown = []
    for k, cond in enumerate(frame_conditions(10, SMALL.fps, lookahead), start=40):
        cond.frame_index = k
        stream.step(cond)
        shown.append(float(dark[stream.last_entry]))
    assert max(shown[4:]) <= closed_enough, shown
