"""Self-Forcing rollouts: the student generates whole clips block by block with the node's
own sampler (`BlockSampler.step`: its KV cache, sinks and window), exactly as it serves.

The rollout stops every block at one exit step (drawn once per rollout, the same on every
process and for every block) and returns that step's clean estimate; only that forward keeps
its graph, so the generator's gradient flows through one denoising step per block, and the
cached context each block attends to is detached (the sampler's cache pass runs without
gradients).
"""

from __future__ import annotations

import torch

from avatar_node.engines.livetalk.sampler import BlockSampler

from .batch import Batch, prompt_kv


def exit_step(num_steps: int, seed: int, step: int) -> int:
    """The denoising step every block of this training step's rollouts stops at."""
    g = torch.Generator().manual_seed(seed * 7919 + step)
    return int(torch.randint(0, num_steps, (1,), generator=g))


def rollout(sampler: BlockSampler, batch: Batch, generators: list[torch.Generator], exit_at: int) -> torch.Tensor:
    """Generate [B, 16, T, h, w] for the batch's conditions through `sampler.step`.

    generators: one per sample (its noise). Gradients are kept when the caller enables them.
    """
    model, stream = sampler.model, sampler.stream
    per_block = stream.frames_per_block
    if batch.frames % per_block:
        raise ValueError(f"{batch.frames} latent frames is not whole blocks of {per_block}")
    prompts = [prompt_kv(model, [p]) for p in batch.prompts]
    sessions = [sampler.open_session(ref, kv) for ref, kv in zip(batch.reference, prompts)]
    shape = (stream.num_steps, model.cfg.latent_channels, per_block, *batch.reference.shape[-2:])
    blocks = []
    for b in range(batch.frames // per_block):
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(model.device)
        audio = batch.audio[:, b * per_block : (b + 1) * per_block]
        blocks.append(sampler.step(sessions, audio, noise, exit_step=exit_at))
    return torch.cat(blocks, dim=2)
