"""Stage 1's targets: the teacher's trajectories from noise to clean, kept at the student's
noise levels, for every cached segment (and as many noise draws per segment as asked)."""

from __future__ import annotations

from pathlib import Path

import torch

from avatar_node.engines.livetalk.model import LiveTalkDiT

from .batch import Batch
from .config import TrainConfig
from .dataset import ShardDataset
from .teacher import trajectory

TRAJECTORIES = "trajectories.pt"


def make_trajectories(
    teacher: LiveTalkDiT,
    data: ShardDataset,
    cfg: TrainConfig,
    out: Path,
    *,
    per_segment: int = 1,
    device: str | torch.device = "cpu",
) -> Path:
    """Write ``out/trajectories.pt``: per entry the segment index and its states
    [num_steps + 1, 16, T, h, w] (the student's noise levels, then the clean end)."""
    entries = []
    keep_every = cfg.ode.teacher_steps // cfg.stream.num_steps
    for index in range(len(data)):
        sample = data[index]
        for k in range(per_segment):
            g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + index) * 997 + k)
            noise = torch.randn(sample.latents.shape, generator=g)[None].to(device)
            states = trajectory(
                teacher,
                Batch.of([sample], device),
                noise,
                steps=cfg.ode.teacher_steps,
                keep_every=keep_every,
                shift=cfg.stream.shift,
                guidance_scale=cfg.ode.guidance_scale,
            )
            entries.append({"index": index, "states": states[0].cpu()})
    out.mkdir(parents=True, exist_ok=True)
    path = out / TRAJECTORIES
    torch.save(entries, path)
    return path


class TrajectoryDataset:
    def __init__(self, path: Path | str, data: ShardDataset) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / TRAJECTORIES
        if not path.is_file():
            raise ValueError(f"no teacher trajectories at {path}; run `avatar-train trajectories` first")
        self.entries = torch.load(path, weights_only=True)
        self.data = data
        if not self.entries:
            raise ValueError(f"{path} holds no trajectories")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        entry = self.entries[i]
        return int(entry["index"]), entry["states"]
