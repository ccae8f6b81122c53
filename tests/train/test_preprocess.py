"""Clips -> shards: the engine's crop and encoders, a manifest with counts and durations,
resumable, and clear refusals for clips without audio or without a face."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatar_train.preprocess import MANIFEST, SHARDS, Encoders, engine_face_finder, find_clips, preprocess, read_clip
from avatar_train.synthetic import mouth_opening, write_clip
from tests.train.helpers import CLIPS, LATENT_FRAMES


def test_manifest_counts_every_segment_and_its_duration(world):
    manifest = json.loads((world.data / MANIFEST).read_text())
    assert manifest["latent_frames"] == LATENT_FRAMES and manifest["fps"] == 16
    assert len(manifest["clips"]) == CLIPS and not manifest["skipped"]
    # 1.6 s clips at 16 fps give one 21-frame segment each (1.25 s of motion).
    assert manifest["segments"] == CLIPS
    assert manifest["seconds"] == pytest.approx(CLIPS * (4 * LATENT_FRAMES - 4) / 16)


def test_a_segment_holds_what_the_networks_need(world):
    sample = world.dataset[0]
    dit = world.teacher.cfg
    assert sample.latents.shape == (16, LATENT_FRAMES, 4, 4)
    assert sample.reference.shape == (16, 4, 4)
    assert sample.audio.shape == (LATENT_FRAMES, 4, dit.audio_feature_dim)
    assert sample.prompt.ndim == 2 and sample.prompt.shape[1] == dit.text_dim
    # The causal VAE's latent 0 sees frame 0 only, which is also the reference image.
    torch.testing.assert_close(sample.latents[:, 0], sample.reference, atol=1e-4, rtol=1e-4)
    # Latent frame 0's 4 audio vectors are video frame 0 repeated, as the release does.
    assert torch.equal(sample.audio[0, 0], sample.audio[0, 3])


def test_the_synthetic_mouth_follows_the_speech(tmp_path):
    frames, audio = read_clip(write_clip(tmp_path / "c.mp4", 3.0, seed=3))
    # Loudness over 50 ms around each frame's time (frame k at k / 16 s = sample 1000 k).
    loudness = np.array([np.abs(audio[max(0, k * 1000 - 400) : k * 1000 + 400]).mean() for k in range(len(frames))])
    corr = np.corrcoef(mouth_opening(frames), loudness)[0, 1]
    assert frames.shape[1:] == (64, 64, 3) and corr > 0.8, corr


def test_a_rerun_resumes_and_skips_what_is_done(world, tmp_path):
    shards = sorted((world.data / SHARDS).iterdir())
    before = {p: p.stat().st_mtime_ns for p in shards}
    seen = []
    preprocess(find_clips(world.clips), world.data, Encoders.from_weights(world.weights), LATENT_FRAMES,
               lambda _: pytest.fail("a finished clip was read again"), log=seen.append)
    assert seen == [] and {p: p.stat().st_mtime_ns for p in shards} == before


def test_clips_without_audio_or_face_are_refused_with_the_reason(world, tmp_path):
    clips = tmp_path / "bad"
    clips.mkdir()
    write_clip(clips / "mute.mp4", 1.6, seed=1, audio=False)
    write_clip(clips / "faceless.mp4", 1.6, seed=2, face=False)
    write_clip(clips / "short.mp4", 0.5, seed=3)
    messages = []
    manifest = preprocess(find_clips(clips), tmp_path / "out", Encoders.from_weights(world.weights), LATENT_FRAMES,
                          engine_face_finder(), log=messages.append)
    skipped = manifest["skipped"]
    assert "no audio track" in skipped["mute.mp4"]
    assert "no face found" in skipped["faceless.mp4"]
    assert manifest["segments"] == 0 and len(messages) == 3
    with pytest.raises(ValueError, match="no clips"):
        find_clips(tmp_path / "out")


def test_the_command_line_stores_bf16_shards_that_train_as_float32(world, tmp_path):
    from avatar_train.cli import main
    from avatar_train.dataset import ShardDataset

    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", 1.6, seed=5)
    out = tmp_path / "data"
    assert main(["preprocess", str(clips), str(out), "--weights", str(world.weights), "--latent-frames",
                 str(LATENT_FRAMES), "--crop", "centre", "--dtype", "bfloat16"]) == 0
    shard = next((out / SHARDS).iterdir())
    assert torch.load(shard, weights_only=True)[0]["latents"].dtype == torch.bfloat16
    sample = ShardDataset(out)[0]
    assert sample.latents.dtype == torch.float32 and sample.latents.shape == (16, LATENT_FRAMES, 4, 4)
    assert main(["preprocess", str(tmp_path / "none"), str(out), "--weights", str(world.weights)]) == 1
