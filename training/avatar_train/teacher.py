"""The teacher: the node's DiT in bidirectional mode (full attention over the clip), loaded by
its own key names, sampled with multi-step flow matching and classifier-free guidance.

Bidirectional is only a different `attend`: every frame sees every frame, at its absolute
temporal position. The same function serves the fake-score critic (the same mode, trained).
OmniAvatar-style checkpoints use the student's key layout (the release's merged 1.3B does);
a 14B shape comes from the config (`TrainConfig.teacher`, "14B").
"""

from __future__ import annotations

from pathlib import Path

import torch

from avatar_node.engines.livetalk.config import DiTConfig
from avatar_node.engines.livetalk.model import AttendFn, LiveTalkDiT, apply_rope, attention, rope_cos_sin
from avatar_node.engines.livetalk.weights import load_dit

from .batch import Batch, force_reference, prompt_kv


def full_attend(model: LiveTalkDiT, frames: int, grid: tuple[int, int]) -> AttendFn:
    """Every token attends to every token; RoPE at absolute frame positions 0..frames-1."""
    positions = torch.arange(frames, device=model.device)
    cos, sin = rope_cos_sin(positions, grid[0], grid[1], model.cfg.head_dim, model.cfg.rope_theta)

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)

    return attend


def bidirectional_flow(model: LiveTalkDiT, latents: torch.Tensor, sigma: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The flow (noise - clean) the model predicts for the whole clip at noise level sigma [B]."""
    n, _, frames, h, w = latents.shape
    ph, pw = model.cfg.patch_size[1:]
    timesteps = (sigma.float() * 1000.0)[:, None].expand(n, frames)
    audio = model.pack_audio(batch.audio)
    prompt = prompt_kv(model, batch.prompts)
    attend = full_attend(model, frames, (h // ph, w // pw))
    return model(latents, timesteps, batch.condition(), prompt, audio, attend).float()


def guided_flow(
    model: LiveTalkDiT, latents: torch.Tensor, sigma: torch.Tensor, batch: Batch, scale: float
) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond) (no second pass at scale 1)."""
    cond = bidirectional_flow(model, latents, sigma, batch)
    if scale == 1.0:
        return cond
    uncond = bidirectional_flow(model, latents, sigma, batch.unconditional())
    return uncond + scale * (cond - uncond)


def teacher_sigmas(steps: int, shift: float) -> list[float]:
    """Noise levels of an Euler path from 1 to 0 in `steps` steps at `shift`, computed as the
    student's schedule is, so every student level is exactly on the path."""
    base = [1.0 - i / steps for i in range(steps + 1)]
    return [shift * s / (1.0 + (shift - 1.0) * s) for s in base]


@torch.no_grad()
def trajectory(
    teacher: LiveTalkDiT,
    batch: Batch,
    noise: torch.Tensor,
    *,
    steps: int,
    keep_every: int,
    shift: float,
    guidance_scale: float,
) -> torch.Tensor:
    """Euler-sample the teacher from `noise` [B, 16, T, h, w]; returns the states at every
    `keep_every`-th step and the clean end: [B, steps // keep_every + 1, 16, T, h, w]."""
    sigmas = teacher_sigmas(steps, shift)
    x = force_reference(noise.float(), batch.reference)
    kept = []
    for i in range(steps):
        if i % keep_every == 0:
            kept.append(x)
        sigma = torch.full((x.shape[0],), sigmas[i], device=x.device)
        flow = guided_flow(teacher, x, sigma, batch, guidance_scale)
        x = force_reference(x + (sigmas[i + 1] - sigmas[i]) * flow, batch.reference)
    kept.append(x)
    return torch.stack(kept, dim=1)


def load_teacher(
    path: Path | str, cfg: DiTConfig, device: str | torch.device = "cpu", *, dtype: torch.dtype = torch.float32
) -> LiveTalkDiT:
    """A bidirectional DiT from a checkpoint with the release's key names (prefixes such as
    'model.' are removed), frozen. Raises ValueError listing missing or mis-shaped tensors."""
    return load_dit(path, cfg, dtype=dtype, device=device)
