"""Audio grouping: which video frames' features feed which latent frame."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from avatar_node.engines.livetalk.audio import (  # noqa: E402
    group_block_features,
    video_frames_of_block,
)


def test_block_video_frames_follow_the_causal_vae():
    assert video_frames_of_block(0) == range(0, 9)  # latent 0 = frame 0, latents 1-2 = frames 1-8
    assert video_frames_of_block(1) == range(9, 21)
    assert video_frames_of_block(10) == range(117, 129)
    # Consecutive blocks tile the video without gaps or overlap.
    covered = [f for b in range(20) for f in video_frames_of_block(b)]
    assert covered == list(range(len(covered)))


def test_grouping_repeats_the_first_frame_of_a_session():
    features = torch.arange(9, dtype=torch.float32)[:, None].expand(9, 2)
    grouped = group_block_features(features, first_block=True)
    assert grouped.shape == (3, 4, 2)
    assert grouped[0, :, 0].tolist() == [0, 0, 0, 0]
    assert grouped[1, :, 0].tolist() == [1, 2, 3, 4]
    later = group_block_features(torch.arange(12, dtype=torch.float32)[:, None], first_block=False)
    assert later[2, :, 0].tolist() == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="video_frames_of_block"):
        group_block_features(torch.zeros(10, 2), first_block=False)
