"""wav2vec2 features: whole clip exactly as the release computes them; streamed with a
bounded look-ahead; how far streamed features are from whole-clip ones (printed table)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from avatar_node.engines.livetalk.audio_features import (  # noqa: E402
    FRAME_SAMPLES,
    StreamingAudioFeatures,
    Wav2VecEncoder,
    format_difference_table,
    streaming_difference_table,
    whole_clip_features,
)
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


def test_streaming_difference_table(encoder, speech, capsys):
    rows = streaming_difference_table(encoder, speech, lookaheads=(0, 2, 4, 8), contexts=(16, 48))
    with capsys.disabled():
        print("\nstreamed vs whole-clip wav2vec2 features (tiny random wav2vec2, espeak speech, "
              f"{len(speech) / 16000:.1f} s):\n" + format_difference_table(rows))
    assert len(rows) == 8
    assert all(np.isfinite([r.mean_relative, r.max_relative, r.mean_cosine]).all() for r in rows)
    # With a window holding the whole clip the difference is only at the clip's edges.
    everything = streaming_difference_table(encoder, speech, lookaheads=(0,), contexts=(10_000,))[0]
    assert everything.mean_relative < rows[0].mean_relative
