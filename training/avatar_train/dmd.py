"""Distribution matching distillation: the generator's gradient from two scores, and the
fake-score critic's denoising loss.

For a generated clip x, noise it to level sigma, ask the real score (the teacher, guided)
and the fake score (the critic, trained online on the generator's outputs) for the clean
clip; the gradient pushed into x is (x0_fake - x0_real), normalised per sample by the mean
|x - x0_real|, with masked frames zeroed. `dmd_loss` is a surrogate whose gradient with
respect to x is exactly that divided by the element count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: (noisy latents, sigma [B]) -> predicted clean latents.
CleanFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def dmd_sigmas(n: int, generator: torch.Generator, shift: float, min_t: float, max_t: float) -> torch.Tensor:
    """Noise levels [n]: uniform, shifted as the schedule is, clamped to [min_t, max_t] / 1000."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    shifted = shift * u / (1.0 + (shift - 1.0) * u)
    return (shifted * 1000.0).clamp(min_t, max_t).float() / 1000.0


def noised(x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    return (1.0 - s) * x + s * noise


def dmd_direction(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The DMD gradient for x: (x0_fake - x0_real) / mean|x - x0_real| per sample, masked."""
    dims = tuple(range(1, x.ndim))
    normaliser = (x - x0_real).abs().mean(dim=dims, keepdim=True).clamp_min(1e-8)
    return (x0_fake - x0_real) / normaliser * mask


def dmd_loss(
    x: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    real: CleanFn,
    fake: CleanFn,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-sample surrogate losses [B] whose gradient w.r.t. x is the DMD direction / x[0].numel()."""
    with torch.no_grad():
        x_t = noised(x.detach(), sigma, noise)
        x0_real = real(x_t, sigma).float()
        x0_fake = fake(x_t, sigma).float()
        direction = dmd_direction(x.detach().float(), x0_real, x0_fake, mask)
    target = (x.detach().float() - direction).detach()
    per_sample = 0.5 * (x.float() - target).pow(2).flatten(1).mean(dim=1)
    stats = {"dmd_gradient_norm": float(direction.norm()), "real_fake_gap": float((x0_real - x0_fake).abs().mean())}
    return per_sample, stats


def critic_loss(
    flow_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Per-sample flow-matching loss [B] of the critic on generated clips (masked frames left out)."""
    x = x.detach().float()
    flow = flow_fn(noised(x, sigma, noise), sigma).float()
    err = (flow - (noise - x)).pow(2) * mask
    return err.flatten(1).sum(dim=1) / mask.expand_as(err).flatten(1).sum(dim=1).clamp_min(1.0)


def frame_mask(frames: int, masked: int, like: torch.Tensor) -> torch.Tensor:
    """[1, 1, frames, 1, 1]: 0 for the first `masked` frames, 1 after."""
    mask = torch.ones((1, 1, frames, 1, 1), dtype=torch.float32, device=like.device)
    mask[:, :, :masked] = 0.0
    return mask
