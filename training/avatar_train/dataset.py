"""The cached shards as training samples, and which samples each process takes at each step.

Sample order depends only on (seed, step, position in the global batch): a resumed run
and a run on any number of processes see exactly the same samples at the same step, and
every process takes a disjoint slice of the global batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from avatar_node.engines.livetalk.audio import group_block_features

from .preprocess import MANIFEST, SHARDS


@dataclass(frozen=True)
class Sample:
    latents: torch.Tensor  # [16, T, h, w], the segment's clean latents
    reference: torch.Tensor  # [16, h, w]
    audio: torch.Tensor  # [T, 4, C]: wav2vec2 features grouped per latent frame
    prompt: torch.Tensor  # [tokens, text_dim]


class ShardDataset:
    """Every segment of a preprocessed folder, in memory (latents are small)."""

    def __init__(self, folder: Path | str) -> None:
        root = Path(folder)
        path = root / MANIFEST
        if not path.is_file():
            raise ValueError(f"{root} has no {MANIFEST}; run `avatar-train preprocess CLIPS {root}` first")
        manifest = json.loads(path.read_text())
        self.latent_frames = int(manifest["latent_frames"])
        self.samples: list[Sample] = []
        for key in sorted(manifest["clips"]):
            for seg in torch.load(root / SHARDS / f"{key}.pt", weights_only=True):
                audio = group_block_features(seg["audio"], first_block=True)
                self.samples.append(Sample(seg["latents"], seg["reference"], audio, seg["prompt"]))
        if not self.samples:
            raise ValueError(f"{root} holds no segments (see 'skipped' in its {MANIFEST})")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


def sample_index(size: int, seed: int, step: int, global_batch: int, position: int) -> int:
    """The dataset index of sample `position` of the global batch at `step` (epoch-wise shuffles)."""
    flat = step * global_batch + position
    epoch, offset = divmod(flat, size)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return int(order[offset])


def sample_generator(seed: int, step: int, position: int) -> torch.Generator:
    """The random stream of one sample at one step: noise, timesteps (independent of process count)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 65_537 + position)
