"""The tiny world the training tests run in: random tiny weights (the teacher and the
student's start), a synthetic talking dataset preprocessed the real way, a tiny config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from avatar_node.engines.livetalk.tiny import make_tiny_weights, tiny_model_config
from avatar_node.engines.livetalk.weights import DIT_FILE
from avatar_train.config import DMDConfig, ODEConfig, OptimConfig, TrainConfig
from avatar_train.dataset import ShardDataset
from avatar_train.preprocess import Encoders, centre_face, find_clips, preprocess
from avatar_train.synthetic import write_dataset
from avatar_train.teacher import load_teacher
from avatar_train.trajectories import make_trajectories

#: 2 blocks of 3 latent frames = 21 video frames (1.25 s) per segment.
LATENT_FRAMES = 6
CLIPS = 4


def tiny_config(stage: str = "ode", **changes: object) -> TrainConfig:
    dit = tiny_model_config().dit
    cfg = TrainConfig(
        stage=stage,
        latent_frames=LATENT_FRAMES,
        dit=dit,
        teacher=dit,
        bf16=False,
        gradient_checkpointing=False,
        ode=ODEConfig(
            steps=30, global_batch=2, optim=OptimConfig(1e-3, (0.9, 0.999)), teacher_steps=8, guidance_scale=2.0
        ),
        dmd=DMDConfig(
            steps=10,
            global_batch=2,
            generator_optim=OptimConfig(1e-4, (0.0, 0.999)),
            critic_optim=OptimConfig(1e-4, (0.0, 0.999)),
            critic_per_generator=2,
            guidance_scale=2.0,
            ema_start_step=2,
        ),
        log_every=5,
        sample_every=5,
        checkpoint_every=1000,
    )
    return replace(cfg, **changes)  # type: ignore[arg-type]


class World:
    """Built once per test session under `root` (treat as read-only)."""

    def __init__(self, root: Path) -> None:
        torch.set_num_threads(1)
        self.root = root
        self.weights = make_tiny_weights(root / "weights")
        self.dit_file = self.weights / DIT_FILE
        self.clips = root / "clips"
        write_dataset(self.clips, CLIPS, 1.6, seed=0)
        self.data = root / "data"
        self.manifest = preprocess(
            find_clips(self.clips), self.data, Encoders.from_weights(self.weights), LATENT_FRAMES, centre_face, log=str
        )
        self.dataset = ShardDataset(self.data)
        self.teacher = load_teacher(self.dit_file, tiny_config().teacher)
        make_trajectories(self.teacher, self.dataset, tiny_config(), self.data)
