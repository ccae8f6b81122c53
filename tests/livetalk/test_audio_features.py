"""wav2vec2 features: whole clip exactly as the release computes them; live over as much of
the turn as has arrived (exact once it all has, recomputed only when more arrives); a sliding
window for comparison; how far each is from whole-clip features (printed table)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, TurnAudio  # noqa: E402
from avatar_node.engines.livetalk.audio_features import (  # noqa: E402
    FRAME_SAMPLES,
    StreamingAudioFeatures,
    TurnAudioFeatures,
    Wav2VecEncoder,
    arrival_difference_table,
    format_arrival_table,
    streaming_steps,
    whole_clip_features,
)
from avatar_node.media.audio import to_int16  # noqa: E402
from avatar_node.media.clock import MediaClock  # noqa: E402
from avatar_node.pipeline.conditioning import ConditioningCutter  # noqa: E402
from avatar_node.pipeline.listen import ListenTrack  # noqa: E402
from avatar_node.pipeline.speech import SpeechQueue  # noqa: E402
from avatar_node.engines.livetalk.weights import find_wav2vec_dir  # noqa: E402

from .conftest import speech_16k  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests in the sun for a while."


@pytest.fixture(scope="module")
def encoder(tiny_weights) -> Wav2VecEncoder:
    return Wav2VecEncoder(find_wav2vec_dir(tiny_weights))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_16k(SENTENCE)


def release_features(model, waveform: np.ndarray, frames: int) -> torch.Tensor:
    """The release's computation, restated step by step with transformers' own pieces:
    Wav2Vec2FeatureExtractor normalisation, CNN, interpolation to `frames` before the
    projection, encoder with hidden states, last hidden state + every hidden state."""
    extractor = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    values = torch.from_numpy(np.squeeze(extractor(waveform, sampling_rate=16000).input_values)).float()[None]
    with torch.no_grad():
        cnn = model.feature_extractor(values).transpose(1, 2)
        cnn = torch.nn.functional.interpolate(cnn.transpose(1, 2), size=frames, align_corners=True, mode="linear").transpose(1, 2)
        hidden, _ = model.feature_projection(cnn)
        out = model.encoder(hidden, output_hidden_states=True, return_dict=True)
        embeddings = out.last_hidden_state
        for state in out.hidden_states:
            embeddings = torch.cat((embeddings, state), -1)
    return embeddings[0]


def test_whole_clip_features_match_the_release(encoder, speech):
    frames = len(speech) // FRAME_SAMPLES + 1
    clip = speech[: (frames - 1) * FRAME_SAMPLES]
    ours = whole_clip_features(clip, frames, encoder)
    hidden = encoder.model.config.hidden_size
    assert ours.shape == (frames, hidden * (encoder.model.config.num_hidden_layers + 2))
    torch.testing.assert_close(ours, release_features(encoder.model, clip, frames), rtol=1e-4, atol=1e-4)
    # The last hidden state comes first and again last.
    torch.testing.assert_close(ours[:, :hidden], ours[:, -hidden:], rtol=0, atol=0)


def test_a_window_holding_the_whole_clip_gives_whole_clip_features(encoder, speech):
    """One step covering the clip, no look-ahead: the streamed window *is* the clip."""
    frames = len(speech) // FRAME_SAMPLES + 1
    clip = speech[: (frames - 1) * FRAME_SAMPLES]
    whole = whole_clip_features(clip, frames, encoder)
    stream = StreamingAudioFeatures(encoder, context_frames=0, lookahead_frames=0)
    streamed = stream.features(clip, frames - 1)
    torch.testing.assert_close(streamed, whole[: frames - 1], rtol=1e-4, atol=1e-4)
    # Then a second step continues with that context.
    stream.features(np.zeros(8 * FRAME_SAMPLES, np.float32), 4)


def test_streaming_look_ahead_is_bounded(encoder, speech):
    """A step's features depend on no audio past `lookahead_frames` after its last frame."""
    for lookahead in (0, 4):
        a = StreamingAudioFeatures(encoder, context_frames=16, lookahead_frames=lookahead)
        b = StreamingAudioFeatures(encoder, context_frames=16, lookahead_frames=lookahead)
        step = speech[: 40 * FRAME_SAMPLES].copy()
        later = step.copy()
        later[(12 + lookahead) * FRAME_SAMPLES :] = np.random.default_rng(0).standard_normal(later.shape[0] - (12 + lookahead) * FRAME_SAMPLES) * 0.3
        torch.testing.assert_close(a.features(step, 12), b.features(later, 12), rtol=0, atol=0)
        # ... and audio inside the look-ahead does matter.
        inside = step.copy()
        inside[12 * FRAME_SAMPLES : (12 + lookahead + 1) * FRAME_SAMPLES] *= -3.0
        c = StreamingAudioFeatures(encoder, context_frames=16, lookahead_frames=lookahead)
        assert (c.features(inside, 12) - a.features(step, 12)).abs().max() > 1e-4 or lookahead == 0


def test_reset_forgets_the_context(encoder, speech):
    a = StreamingAudioFeatures(encoder, context_frames=32, lookahead_frames=2)
    b = StreamingAudioFeatures(encoder, context_frames=32, lookahead_frames=2)
    a.features(speech[: 20 * FRAME_SAMPLES], 9)
    b.features(speech[30 * FRAME_SAMPLES :], 9)
    silence = np.zeros(20 * FRAME_SAMPLES, np.float32)
    assert (a.features(silence, 12) - b.features(silence, 12)).abs().max() > 1e-4  # context differs
    a.reset()
    b.reset()
    torch.testing.assert_close(a.features(silence, 12), b.features(silence, 12), rtol=0, atol=0)


def cutter_with(turns: list[np.ndarray], lookahead_ms: int = 250) -> ConditioningCutter:
    """The node's own speech queue and cutter at 16 fps, the turns queued whole."""
    clock = MediaClock.create(16, SPEECH_SAMPLE_RATE)
    queue = SpeechQueue(clock, lookahead_ms)
    for k, turn in enumerate(turns):
        queue.queue_clip(f"t{k}", SPEECH_SAMPLE_RATE, to_int16(turn), turn, ())
    return ConditioningCutter(clock, queue, ListenTrack(live=False))


def whole(encoder: Wav2VecEncoder, turn: np.ndarray) -> torch.Tensor:
    n = len(turn) // FRAME_SAMPLES + 1
    return whole_clip_features(turn[: (n - 1) * FRAME_SAMPLES], n, encoder)


def assert_relative_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5) -> None:
    err = ((got - want).norm(dim=-1) / want.norm(dim=-1)).max().item()
    assert err <= rtol, err


def test_whole_turns_through_the_node_queue_give_the_release_features(encoder, speech):
    """Two turns queued whole, back to back (the second starts inside a step): every frame of
    each gets exactly its own turn's whole-clip features; frames after them, silence's."""
    first, second = speech[: 37_500], speech[20_000:]  # 2.34 s and the rest: turns end mid-frame
    cutter = cutter_with([first, second])
    features = TurnAudioFeatures(encoder, lookahead_frames=4)
    total = len(first) // FRAME_SAMPLES + 1 + len(second) // FRAME_SAMPLES + 1 + 20
    rows, speaking = [], []
    for start, n in streaming_steps(total):
        cond, _ = cutter.cut(start, n, may_start=True)
        rows.append(features.features(n, cond.speaking, cond.turn_audio))
        speaking += list(cond.speaking)
    got = torch.cat(rows)
    a = -(-len(first) // FRAME_SAMPLES)  # frames the first turn plays
    b = -(-len(second) // FRAME_SAMPLES)
    assert speaking == [True] * (a + b) + [False] * (total - a - b)
    assert_relative_close(got[:a], whole(encoder, first)[:a])
    assert_relative_close(got[a : a + b], whole(encoder, second)[:b])
    last = streaming_steps(total)[-1][1]
    silent = features.features(last, [False] * last, None)
    torch.testing.assert_close(got[-last:], silent, rtol=0, atol=0)
    assert features.computations == 2  # each turn once: nothing new arrived after it was there


def test_features_are_computed_again_only_when_more_of_the_turn_arrives(encoder, speech):
    features = TurnAudioFeatures(encoder, lookahead_frames=4)
    there = 40 * FRAME_SAMPLES
    features.features(9, [True] * 9, TurnAudio(1, 0, 0, speech[:there], complete=False))
    assert features.computations == 1
    features.features(12, [True] * 12, TurnAudio(1, 9 * FRAME_SAMPLES, there, speech[there:there], complete=False))
    assert features.computations == 1  # nothing new: the features of the same 40 frames
    more = features.features(12, [True] * 12, TurnAudio(1, 21 * FRAME_SAMPLES, there, speech[there : there + 8000], False))
    assert features.computations == 2
    n = (there + 8000) // FRAME_SAMPLES + 1
    expected = whole_clip_features(speech[: (n - 1) * FRAME_SAMPLES], n, encoder)[21:33]
    assert_relative_close(more, expected)


def test_a_turn_longer_than_the_window_is_seen_around_the_step(encoder):
    rng = np.random.default_rng(3)
    long_turn = (rng.standard_normal(120 * FRAME_SAMPLES) * 0.2).astype(np.float32)
    features = TurnAudioFeatures(encoder, lookahead_frames=4, max_clip_frames=40)
    out = []
    for start, n in streaming_steps(110):
        out.append(features.features(n, [True] * n, TurnAudio(1, start * FRAME_SAMPLES, 0 if start == 0 else len(long_turn),
                                                             long_turn if start == 0 else long_turn[:0], True)))
    got = torch.cat(out)
    assert got.shape[0] == 110 and torch.isfinite(got).all()
    # Step 9..: the window [frame - 20, frame + 20) of the turn, computed as a clip of its own.
    start = 57 - 20
    window = long_turn[start * FRAME_SAMPLES : (start + 39) * FRAME_SAMPLES]
    assert_relative_close(got[57:69], whole_clip_features(window, 40, encoder)[20:32])
    assert features._clip is not None and features._clip.audio.size <= len(long_turn)


def test_arrival_table_never_worse_than_the_sliding_window(encoder, speech, capsys):
    rows = arrival_difference_table(encoder, speech)
    with capsys.disabled():
        print("\nlive features vs whole-clip (tiny random wav2vec2, espeak speech, "
              f"{len(speech) / 16000:.1f} s):\n" + format_arrival_table(rows))
    assert [r.arrived for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for r in rows:
        assert r.turn.mean_relative <= r.window.mean_relative, r
        assert r.turn.max_relative <= r.window.max_relative + 1e-6, r
    assert rows[-1].turn.max_relative <= 1e-5 and rows[-1].computations == 1
    # More of the turn there at the start: closer to what the model was trained on.
    assert all(a.turn.mean_relative >= b.turn.mean_relative for a, b in zip(rows, rows[1:]))
