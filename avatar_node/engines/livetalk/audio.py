"""Which video frames' audio features feed which latent frame.

The VAE folds video frames into latent frames causally: latent frame 0 is video frame 0,
latent frame j >= 1 is video frames 4j-3 .. 4j. The audio path follows the same grouping:
the release computes one wav2vec2 feature vector per video frame (the last hidden state
and all 13 hidden states of wav2vec2-base, 14 x 768 = 10752 dims, resampled to the video
rate), repeats the first one 3 times, and gives each latent frame the 4 vectors of its
video frames. So block 0 (3 latent frames) needs 9 video frames of audio and every later
block 12. The DiT's `AudioPack` turns the [4, 10752] group into 32 numbers.

The wav2vec2 encoder itself lives outside the DiT (it needs `transformers` and the user's
weights); these helpers take its per-frame features.
"""

from __future__ import annotations

import torch


def video_frames_of_block(block_index: int, frames_per_block: int = 3, per_latent: int = 4) -> range:
    """Video frame numbers covered by a block of latent frames."""
    first_latent = block_index * frames_per_block
    last_video = per_latent * (first_latent + frames_per_block - 1)
    first_video = 0 if first_latent == 0 else per_latent * first_latent - (per_latent - 1)
    return range(first_video, last_video + 1)


def group_block_features(frame_features: torch.Tensor, first_block: bool, per_latent: int = 4) -> torch.Tensor:
    """Per-video-frame features of one block [video_frames, C] -> [latent_frames, per_latent, C].

    For the first block of a session the first feature is repeated `per_latent - 1` times,
    as the release does, so latent frame 0 sees video frame 0 only.
    """
    if frame_features.ndim != 2:
        raise ValueError(f"expected [video_frames, C] features, got {tuple(frame_features.shape)}")
    if first_block:
        frame_features = torch.cat([frame_features[:1].expand(per_latent - 1, -1), frame_features])
    if frame_features.shape[0] % per_latent:
        raise ValueError(
            f"{frame_features.shape[0]} video frames do not make whole latent frames of {per_latent}; "
            "use video_frames_of_block() to select a block's frames"
        )
    return frame_features.unflatten(0, (-1, per_latent))
