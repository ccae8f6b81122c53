"""DMD: the generator's gradient is the analytic one where both scores are known (Gaussians),
it moves a generator onto the real distribution, and on the synthetic data the critic learns
the student's outputs while the student's outputs move toward the teacher's."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from avatar_node.engines.livetalk.model import LiveTalkDiT
from avatar_node.engines.livetalk.sampler import BlockSampler
from avatar_train.batch import Batch, force_reference
from avatar_train.config import DMDConfig, OptimConfig
from avatar_train.dmd import critic_loss, dmd_loss, dmd_sigmas, frame_mask
from avatar_train.rollout import rollout
from avatar_train.teacher import bidirectional_flow, trajectory
from avatar_train.trainer import Inputs, Trainer
from tests.train.helpers import tiny_config


def gaussian_clean(mean: float, std: float):
    """E[x0 | x_t] for x0 ~ N(mean, std^2) per element and x_t = (1 - s) x0 + s eps."""

    def clean(x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, 1, 1, 1, 1).double()
        a = 1.0 - s
        gain = a * std**2 / (a**2 * std**2 + s**2)
        return mean + gain * (x_t.double() - a * mean)

    return clean


def test_the_generator_gradient_is_the_analytic_dmd_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn((3, 2, 6, 2, 2), generator=g, dtype=torch.float64).requires_grad_(True)
    sigma = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    mask = frame_mask(6, 3, x).double()
    real, fake = gaussian_clean(1.5, 0.7), gaussian_clean(-0.5, 1.3)
    per_sample, _ = dmd_loss(x, sigma, noise, real, fake, mask)
    per_sample.sum().backward()
    # By hand: both posteriors are affine in x_t; the gradient is their difference, scaled.
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x.detach() + s * noise
    a = 1 - s
    x0_real = 1.5 + a * 0.49 / (a**2 * 0.49 + s**2) * (x_t - a * 1.5)
    x0_fake = -0.5 + a * 1.69 / (a**2 * 1.69 + s**2) * (x_t - a * -0.5)
    normaliser = (x.detach() - x0_real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    expected = (x0_fake - x0_real) / normaliser * mask / x[0].numel()
    torch.testing.assert_close(x.grad, expected.float().double(), rtol=1e-5, atol=1e-7)
    assert torch.all(x.grad[:, :, :3] == 0)  # the first block is masked from the generator


def test_dmd_moves_a_generator_onto_the_real_distribution():
    """x = theta + z, z ~ N(0, 1): the fake score is the generator's own N(theta, 1), the real
    one N(2, 1). Descending the DMD loss moves theta to 2."""
    theta = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=0.02)
    g = torch.Generator().manual_seed(1)
    mask = torch.ones((1, 1, 4, 1, 1))
    for _ in range(300):
        x = theta + torch.randn((8, 1, 4, 2, 2), generator=g)
        sigma = dmd_sigmas(8, g, 5.0, 20.0, 980.0)
        noise = torch.randn(x.shape, generator=g)
        fake = gaussian_clean(float(theta.detach()), 1.0)
        per_sample, _ = dmd_loss(x, sigma, noise, gaussian_clean(2.0, 1.0), fake, mask)
        opt.zero_grad()
        (per_sample.mean() * x[0].numel()).backward()
        opt.step()
    assert abs(float(theta.detach()) - 2.0) < 0.1, float(theta.detach())


def test_dmd_levels_are_shifted_and_clamped():
    sigma = dmd_sigmas(20_000, torch.Generator().manual_seed(0), 5.0, 20.0, 980.0)
    assert float(sigma.min()) == torch.tensor(0.02).item() and float(sigma.max()) == torch.tensor(0.98).item()
    # Shift 5 puts the median noise level at 5 * 0.5 / (1 + 4 * 0.5) = 0.833.
    assert abs(float(sigma.median()) - 5 / 6) < 0.01


def test_the_critic_loss_leaves_frame_zero_out():
    x = torch.randn((2, 16, 6, 4, 4))
    noise, sigma = torch.randn_like(x), torch.tensor([0.3, 0.6])
    mask = frame_mask(6, 1, x)

    def flow(x_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = noise - x
        out[:, :, 0] += 100.0  # wrong only on frame 0
        return out

    assert torch.all(critic_loss(flow, x, sigma, noise, mask) == 0)


def _stats(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and spread of the frames after the first block."""
    y = x[:, :, 3:]
    return torch.cat([y.mean(dim=(0, 2, 3, 4)), y.std(dim=(0, 2, 3, 4))])


def test_dmd_on_synthetic_data_moves_the_student_toward_the_teacher(world, tmp_path):
    """From a random student: 40 steps (20 generator updates) of the full stage 2 loop."""
    torch.manual_seed(5)
    start = LiveTalkDiT(tiny_config().dit)
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(tmp_path / "start.safetensors"))
    cfg = tiny_config("dmd")
    cfg = cfg.with_changes(
        dmd=DMDConfig(
            steps=40,
            global_batch=2,
            generator_optim=OptimConfig(1e-3, (0.0, 0.999)),
            critic_optim=OptimConfig(1e-3, (0.0, 0.999)),
            critic_per_generator=2,
            guidance_scale=2.0,
            ema_start_step=10**9,
        )
    )
    batch = Batch.of([world.dataset[i] for i in range(len(world.dataset))])
    with torch.no_grad():
        teacher_stats = _stats(
            torch.cat(
                [
                    trajectory(
                        world.teacher,
                        batch,
                        torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(100 + k)),
                        steps=8,
                        keep_every=2,
                        shift=5.0,
                        guidance_scale=2.0,
                    )[:, -1]
                    for k in range(4)
                ]
            )
        )

    def student_clips(model: LiveTalkDiT) -> torch.Tensor:
        sampler = BlockSampler(model, cfg.stream)
        with torch.no_grad():
            return torch.cat(
                [
                    rollout(sampler, batch, [torch.Generator().manual_seed(200 + 10 * k + i) for i in range(batch.size)], 3)
                    for k in range(4)
                ]
            )

    trainer = Trainer(cfg, Inputs(world.data, tmp_path / "start.safetensors", teacher=world.dit_file), tmp_path / "run")
    before = float((_stats(student_clips(trainer.generator)) - teacher_stats).pow(2).sum())
    list(trainer.steps())
    clips = student_clips(trainer.generator)
    after = float((_stats(clips) - teacher_stats).pow(2).sum())

    # The critic, on the final student's clips at fixed noise, against its starting point (the teacher).
    g = torch.Generator().manual_seed(9)
    sigma, noise = dmd_sigmas(clips.shape[0], g, 5.0, 20.0, 980.0), torch.randn(clips.shape, generator=g)
    big = Batch(batch.latents.repeat(4, 1, 1, 1, 1), batch.reference.repeat(4, 1, 1, 1), batch.audio.repeat(4, 1, 1, 1),
                batch.prompts * 4)

    def loss_of(model: LiveTalkDiT) -> float:
        with torch.no_grad():
            flow = lambda x_t, s: bidirectional_flow(model, force_reference(x_t, big.reference), s, big)  # noqa: E731
            return float(critic_loss(flow, clips, sigma, noise, frame_mask(clips.shape[2], 1, clips)).mean())

    critic_before, critic_after = loss_of(world.teacher), loss_of(trainer.critic)
    print(f"stage 2: distance of the student's latent statistics to the teacher's {before:.3f} -> {after:.3f}; "
          f"critic denoising loss on the student's clips {critic_before:.3f} -> {critic_after:.3f}")
    assert after < 0.75 * before
    assert critic_after < 0.9 * critic_before
