"""The livetalk engine on tiny random weights: a session through real speech, a skip past
1024 latent frames and an interrupt; batching across sessions; input checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from avatar_node.engines.base import AvatarInputError, Conditioning, StreamOptions  # noqa: E402
from avatar_node.engines.livetalk.engine import (  # noqa: E402
    BEHAVIOUR_BLOCKS,
    LiveTalkEngine,
    LiveTalkStream,
)
from avatar_node.engines.livetalk.prompts import BEHAVIOUR_PROMPTS  # noqa: E402

from .conftest import speech_16k  # noqa: E402

PORTRAIT = Path(__file__).resolve().parents[2] / "avatar_node" / "assets" / "sample_portrait.jpg"
CANVAS = dict(width=64, height=48, fps=16)


@pytest.fixture(scope="module")
def engine(tiny_weights) -> LiveTalkEngine:
    eng = LiveTalkEngine(tiny_weights, device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def identity(engine):
    return engine.prepare(PORTRAIT.read_bytes())


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_16k("Hello there. I am a talking head, and this is what I sound like when I speak for a while.")


def conditioning(engine: LiveTalkEngine, stream: LiveTalkStream, audio: np.ndarray | None, index: int, **extra) -> Conditioning:
    """What the node gives a step at frame `index`: the speech of its frames plus the look-ahead."""
    frames = stream.next_step_frames()
    span = frames * 1000 + engine.info.audio_lookahead_ms * 16
    chunk = np.zeros(span, np.float32)
    speaking = False
    if audio is not None:
        piece = audio[index * 1000 : index * 1000 + span]
        chunk[: piece.shape[0]] = piece
        speaking = piece.shape[0] > 0
    return Conditioning(speech=chunk, speaking=[speaking] * frames, listen=np.zeros(span, np.float32), frame_index=index, **extra)


def test_engine_info_and_contract(engine):
    info = engine.info
    assert (info.name, info.native_fps, info.frames_per_step, info.audio_lookahead_ms) == ("livetalk", 16.0, 12, 250)
    assert info.max_batch > 1
    assert engine.realtime_capacity() is None  # measured on a GPU only
    assert {"smile", "nod"} <= engine.behaviours


def test_session_through_speech_a_skip_past_1024_frames_and_an_interrupt(engine, identity, speech):
    stream = engine.open(identity, StreamOptions(seed=3, **CANVAS))
    index, sizes = 0, []
    for _ in range(3):  # 9 + 12 + 12 frames of speech
        frames = stream.step(conditioning(engine, stream, speech, index))
        sizes.append(len(frames))
        assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 and f.flags.c_contiguous for f in frames)
        index += len(frames)
    assert sizes == [9, 12, 12]
    assert stream.features.turn is not None

    # Interrupt: the turn's audio is dropped; the next block starts from silence.
    stream.reset_speech()
    assert stream.features.turn is None
    stream.step(conditioning(engine, stream, None, index))
    index += 12
    assert stream.features.turn is None

    # The node skips far ahead (a live session that fell behind; or hours later): the block
    # follows the timeline, past the release's 1024 latent frames.
    index = 4500
    frames = stream.step(conditioning(engine, stream, speech, index))
    cache = stream.session.cache
    assert len(frames) == 12 and cache.next_frame == (4500 + 3) // 4 + 3 > 1024
    for _ in range(3):
        index += 12
        frames = stream.step(conditioning(engine, stream, speech[:20_000], index))
        assert len(frames) == 12
    assert cache.next_frame == (4500 + 3) // 4 + 12
    assert max(cache.positions()[1]) < engine.stream_cfg.window_frames
    assert cache.frames[:9] == list(range(9))  # the identity sinks are still the first frames
    assert all(np.ptp(f) > 0 for f in frames)
    stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        stream.step(conditioning(engine, stream, None, index + 12))


def test_speech_moves_the_frames(engine, identity, speech):
    talking = engine.open(identity, StreamOptions(seed=5, **CANVAS))
    silent = engine.open(identity, StreamOptions(seed=5, **CANVAS))
    a = talking.step(conditioning(engine, talking, speech, 0))
    b = silent.step(conditioning(engine, silent, None, 0))
    assert np.abs(np.stack(a).astype(int) - np.stack(b).astype(int)).max() > 8


def test_two_sessions_batched_equal_each_alone(engine, identity, speech):
    options = [StreamOptions(seed=11, **CANVAS), StreamOptions(seed=12, **CANVAS)]
    batched = [engine.open(identity, o) for o in options]
    alone = [engine.open(identity, o) for o in options]
    audio = [speech, speech[::-1].copy()]
    index = 0
    for _ in range(3):
        conds = [conditioning(engine, s, a, index) for s, a in zip(batched, audio)]
        together = engine.step_batch(batched, conds)
        separate = [s.step(c) for s, c in zip(alone, conds)]
        for t, s in zip(together, separate):
            t, s = np.stack(t).astype(int), np.stack(s).astype(int)
            assert np.abs(t - s).max() <= 1 and np.abs(t - s).mean() < 0.01
        assert np.abs(np.stack(together[0]).astype(int) - np.stack(together[1]).astype(int)).mean() > 2
        index += len(together[0])


def test_prompt_follows_behaviours_and_listening(engine, identity):
    stream = engine.open(identity, StreamOptions(seed=1, **CANVAS))
    default = engine.default_prompt_kv()
    stream.step(conditioning(engine, stream, None, 0, behaviours=("smile",)))
    assert stream.session.prompt is engine.prompt_kv(BEHAVIOUR_PROMPTS["smile"])
    index = 9
    for _ in range(BEHAVIOUR_BLOCKS - 1):
        stream.step(conditioning(engine, stream, None, index))
        index += 12
    stream.step(conditioning(engine, stream, None, index))
    assert stream.session.prompt is default
    index += 12
    loud = conditioning(engine, stream, None, index)
    loud.listen = np.random.default_rng(0).standard_normal(loud.listen.shape[0]).astype(np.float32) * 0.1
    stream.step(loud)
    assert stream.session.prompt is engine.prompt_kv(BEHAVIOUR_PROMPTS["listening"])


def test_prepare_caches_by_content_and_checks_input(engine, identity):
    assert engine.prepare(PORTRAIT.read_bytes()) is identity
    data = identity.data
    assert data.reference.shape == (16, 4, 4)
    assert data.model_image.shape == (32, 32, 3)
    # The crop is centred on the face.
    face = identity.face
    assert data.crop.x <= face.x and data.crop.x + data.crop.side >= face.x + face.width
    from PIL import Image

    blank = io.BytesIO()
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank, format="PNG")
    with pytest.raises(AvatarInputError, match="No face"):
        engine.prepare(blank.getvalue())
    with pytest.raises(AvatarInputError, match="renders at 16 fps"):
        engine.open(identity, StreamOptions(width=64, height=48, fps=25))


def test_canvas_keeps_the_photo_around_the_crop(engine, identity):
    stream = engine.open(identity, StreamOptions(width=160, height=90, fps=16, framing="auto"))
    frames = stream.step(conditioning(engine, stream, None, 0))
    background = stream.compositor.background
    assert frames[0].shape == (90, 160, 3)
    # Left and right of the pasted square the canvas is the photo's, untouched.
    np.testing.assert_array_equal(frames[0][:, :30], background[:, :30])
    assert np.abs(frames[0][:, 60:100].astype(int) - background[:, 60:100]).mean() > 2


def test_a_whole_turn_reaches_the_model_as_the_release_computes_it(engine, identity, speech):
    """Speech queued whole, cut by the node's own queue: the audio features of every block
    are the whole clip's, to 1e-5 relative (the release computes them over the whole clip)."""
    from .test_audio_features import assert_relative_close, cutter_with, whole

    stream = engine.open(identity, StreamOptions(**CANVAS))
    cutter = cutter_with([speech])
    played = -(-len(speech) // 1000)
    got = []
    index = 0
    while index < played + 12:
        n = stream.next_step_frames()
        cond, _ = cutter.cut(index, n, may_start=True)
        rows = stream.plan_block(cond).audio.flatten(0, 1)
        got.append(rows[3:] if index == 0 else rows)  # the first block repeats frame 0 three times
        index += n
    stream.close()
    assert_relative_close(torch.cat(got)[:played], whole(engine.audio, speech)[:played])
