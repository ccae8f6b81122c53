"""The cached shards as training samples, and which samples each process takes at each step.

Sample order depends only on (seed, step, position in the global batch): a resumed run
and a run on any number of processes see exactly the same samples at the same step, and
every process takes a disjoint slice of the global batch.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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
    """Every segment of a preprocessed folder, read from its shard when asked for (shards are
    memory-mapped, the last few kept open), so the data set may be larger than memory."""

    def __init__(self, folder: Path | str, open_shards: int = 8) -> None:
        self.root = Path(folder)
        path = self.root / MANIFEST
        if not path.is_file():
            raise ValueError(f"{self.root} has no {MANIFEST}; run `avatar-train preprocess CLIPS {self.root}` first")
        manifest = json.loads(path.read_text())
        self.latent_frames = int(manifest["latent_frames"])
        self.index = [(key, i) for key in sorted(manifest["clips"]) for i in range(manifest["clips"][key]["segments"])]
        if not self.index:
            raise ValueError(f"{self.root} holds no segments (see 'skipped' in its {MANIFEST})")
        self._open: OrderedDict[str, list[dict[str, torch.Tensor]]] = OrderedDict()
        self._open_shards = open_shards

    def __len__(self) -> int:
        return len(self.index)

    def _shard(self, key: str) -> list[dict[str, torch.Tensor]]:
        if key not in self._open:
            self._open[key] = torch.load(self.root / SHARDS / f"{key}.pt", weights_only=True, mmap=True)
            while len(self._open) > self._open_shards:
                self._open.popitem(last=False)
        self._open.move_to_end(key)
        return self._open[key]

    def __getitem__(self, index: int) -> Sample:
        key, i = self.index[index]
        seg = self._shard(key)[i]
        audio = group_block_features(seg["audio"].float(), first_block=True)
        return Sample(seg["latents"].float(), seg["reference"].float(), audio, seg["prompt"].float())


def sample_index(size: int, seed: int, step: int, global_batch: int, position: int) -> int:
    """The dataset index of sample `position` of the global batch at `step` (epoch-wise shuffles)."""
    flat = step * global_batch + position
    epoch, offset = divmod(flat, size)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return int(order[offset])


def sample_generator(seed: int, step: int, position: int) -> torch.Generator:
    """The random stream of one sample at one step: noise, timesteps (independent of process count)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 65_537 + position)
