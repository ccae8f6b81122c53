"""A training batch and the conditioning every network derives from it.

Each network projects the raw conditions with its own weights (prompt K/V, audio pack), so
the batch keeps them raw: the reference latent, grouped wav2vec2 features, prompt embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from avatar_node.engines.livetalk.model import LiveTalkDiT, PromptConditioning
from avatar_node.engines.livetalk.sampler import reference_condition

from .dataset import Sample


@dataclass(frozen=True)
class Batch:
    latents: torch.Tensor  # [B, 16, T, h, w]
    reference: torch.Tensor  # [B, 16, h, w]
    audio: torch.Tensor  # [B, T, 4, C]
    prompts: tuple[torch.Tensor, ...]  # B x [tokens, text_dim]

    @classmethod
    def of(cls, samples: Sequence[Sample], device: torch.device | str = "cpu") -> Batch:
        return cls(
            torch.stack([s.latents for s in samples]).to(device),
            torch.stack([s.reference for s in samples]).to(device),
            torch.stack([s.audio for s in samples]).to(device),
            tuple(s.prompt.to(device) for s in samples),
        )

    @property
    def size(self) -> int:
        return self.latents.shape[0]

    @property
    def frames(self) -> int:
        return self.latents.shape[2]

    def condition(self) -> torch.Tensor:
        """Reference latent + first-frame mask for the whole clip: [B, 17, T, h, w]."""
        return torch.stack([reference_condition(r, self.frames, True) for r in self.reference])

    def unconditional(self) -> Batch:
        """No prompt (zero embeddings) and silence (zero features): the CFG baseline."""
        return Batch(
            self.latents,
            self.reference,
            torch.zeros_like(self.audio),
            tuple(p.new_zeros((0, p.shape[1])) for p in self.prompts),
        )


def prompt_kv(model: LiveTalkDiT, prompts: Sequence[torch.Tensor]) -> PromptConditioning:
    """The prompts' cross-attention K/V through `model` (with gradients when enabled)."""
    return PromptConditioning.stack([model.encode_prompt(p) for p in prompts])


def force_reference(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Latent frame 0 is the reference latent, as the sampler forces it (out of place)."""
    return torch.cat([reference[:, :, None].to(latents.dtype), latents[:, :, 1:]], dim=2)
