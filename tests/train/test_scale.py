"""What scaling up relies on, checked small: gradient checkpointing changes no gradient,
bf16 autocast trains, and the logs are TensorBoard event files with every loss in them."""

from __future__ import annotations

import math

import torch

from avatar_train.batch import Batch
from avatar_train.ode import block_levels, ode_loss
from avatar_train.teacher import bidirectional_flow
from avatar_train.trainer import Inputs, Trainer
from avatar_train.trajectories import TrajectoryDataset
from tests.train.helpers import tiny_config


def _grads(model, loss_fn) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(world):
    cfg = tiny_config()
    model = world.teacher
    index, states = TrajectoryDataset(world.data, world.dataset)[0]
    batch = Batch.of([world.dataset[index]])
    levels = block_levels(cfg.stream, cfg.latent_frames, torch.Generator().manual_seed(0))[None]
    sigma = torch.tensor([0.7])

    def losses() -> torch.Tensor:
        causal = ode_loss(model, cfg.stream, batch, states[None], levels)[0].sum()
        full = bidirectional_flow(model, batch.latents, sigma, batch).pow(2).mean()
        return causal + full

    model.requires_grad_(True)
    try:
        plain = _grads(model, losses)
        model.gradient_checkpointing = True
        checkpointed = _grads(model, losses)
    finally:
        model.gradient_checkpointing = False
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 100
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_autocast_with_checkpointing_trains_and_logs_to_tensorboard(world, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config("dmd", bf16=True, gradient_checkpointing=True, log_every=1, sample_every=2)
    inputs = Inputs(world.data, world.dit_file, teacher=world.dit_file, vae_weights=world.weights)
    logs = Trainer(cfg, inputs, tmp_path).run(2)
    assert all(math.isfinite(v) for log in logs for v in log.values.values())
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"dmd/generator_loss", "dmd/critic_loss", "dmd/dmd_gradient_norm", "dmd/real_fake_gap"} <= scalars
    assert {"samples/latent_rgb", "samples/frames"} <= set(events.Tags()["images"])


def test_the_device_benchmark_runs_its_path_at_test_size():
    from avatar_train.bench import run

    report = run("cpu", True, "1.3B", 6, 2)
    assert report["iterations"] == 2 and len(report["seconds_per_iteration_after_the_first"]) == 1  # type: ignore[arg-type]
