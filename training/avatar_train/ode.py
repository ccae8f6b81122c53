"""Stage 1, ODE-regression initialisation of the causal student.

Each block of a clip is put at a noise level drawn from the student's own 4-step list (its
state on the teacher's trajectory there) and the student, in its serving attention pattern
(block-causal with sinks, `sampler.offline_block_pass`, which the streaming KV cache is
tested against), predicts the clean clip; the loss is the MSE to the trajectory's clean
end. The context a block attends to is the clean end itself (teacher forcing), as the
cache holds clean frames when serving. Frame 0 is the reference and is left out.
"""

from __future__ import annotations

import torch

from avatar_node.engines.livetalk.config import StreamConfig
from avatar_node.engines.livetalk.model import LiveTalkDiT
from avatar_node.engines.livetalk.sampler import FlowSchedule, offline_block_pass

from .batch import Batch, force_reference, prompt_kv


def block_levels(stream: StreamConfig, frames: int, generator: torch.Generator) -> torch.Tensor:
    """A random index into the student's step list for each block, repeated per frame: [frames]."""
    blocks = frames // stream.frames_per_block
    per_block = torch.randint(0, stream.num_steps, (blocks,), generator=generator)
    return per_block.repeat_interleave(stream.frames_per_block)


def ode_loss(
    student: LiveTalkDiT, stream: StreamConfig, batch: Batch, states: torch.Tensor, levels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample MSE [B] of the student's clean prediction against the trajectory end, and
    the prediction itself [B, 16, T, h, w].

    states: [B, num_steps + 1, 16, T, h, w]; levels: [B, T] indices into the step list.
    """
    schedule = FlowSchedule.few_step(stream.num_steps, stream.shift)
    sigmas = torch.tensor(schedule.sigmas, device=states.device)[levels]  # [B, T]
    timesteps = torch.tensor(schedule.timesteps, device=states.device)[levels]
    target = states[:, -1]
    pick = levels[:, None, None, :, None, None].expand(-1, 1, *states.shape[2:])
    noisy = force_reference(states.gather(1, pick)[:, 0], batch.reference)
    _, flow = offline_block_pass(
        student,
        stream,
        target,
        noisy,
        timesteps,
        batch.condition(),
        prompt_kv(student, batch.prompts),
        student.pack_audio(batch.audio),
    )
    predicted = noisy - sigmas[:, None, :, None, None] * flow
    return (predicted - target)[:, :, 1:].pow(2).flatten(1).mean(dim=1), predicted
