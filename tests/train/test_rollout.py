"""Self-Forcing rollouts go through the serving sampler: the same clips, one graph-keeping
step per block at the drawn exit step, and training stops when the sampler is broken."""

from __future__ import annotations

import pytest
import torch

from avatar_node.engines.livetalk.sampler import BlockSampler
from avatar_train.batch import Batch
from avatar_train.rollout import exit_step, rollout
from avatar_train.trainer import Inputs, Trainer
from tests.train.helpers import tiny_config


def _batch(world) -> Batch:
    return Batch.of([world.dataset[0], world.dataset[1]])


def test_a_full_rollout_is_exactly_what_the_node_serves(world):
    batch, stream = _batch(world), tiny_config().stream
    sampler = BlockSampler(world.teacher, stream)
    with torch.no_grad():
        rolled = rollout(sampler, batch, [torch.Generator().manual_seed(i) for i in range(2)], stream.num_steps - 1)
    # The node's way: open sessions, step block by block with no exit step.
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    sessions = [sampler.open_session(r, p) for r, p in zip(batch.reference, batch.prompts)]
    served = []
    for b in range(batch.frames // 3):
        noise = torch.stack([torch.randn((4, 16, 3, 4, 4), generator=g) for g in gens])
        served.append(sampler.step(sessions, batch.audio[:, 3 * b : 3 * b + 3], noise))
    assert torch.equal(rolled, torch.cat(served, dim=2))


@pytest.mark.parametrize("exit_at", [0, 2])
def test_only_the_exit_step_keeps_a_graph(world, exit_at):
    model = world.teacher
    model.requires_grad_(True)
    calls: list[bool] = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    try:
        x = rollout(BlockSampler(model, tiny_config().stream), _batch(world), [torch.Generator()] * 2, exit_at)
        x[:, :, 3:].sum().backward()
        # The prompt's and audio's projections are trained through a batched rollout too.
        assert model.text_embedding[2].bias.grad is not None and model.audio_proj.proj.weight.grad is not None
    finally:
        hook.remove()
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    # Per block: the steps up to the exit (only the exit step with gradients), then the cache pass.
    per_block = [False] * exit_at + [True] + [False]
    assert calls == per_block * 2
    assert x.requires_grad


def test_the_exit_step_is_drawn_per_training_step_and_the_same_everywhere():
    draws = [exit_step(4, seed=0, step=s) for s in range(40)]
    assert set(draws) == {0, 1, 2, 3}
    assert draws == [exit_step(4, seed=0, step=s) for s in range(40)]


def test_breaking_the_serving_sampler_breaks_training(world, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("dmd"), Inputs(world.data, world.dit_file, teacher=world.dit_file), tmp_path)

    def broken(self, *args, **kwargs):
        raise RuntimeError("the serving sampler is broken")

    monkeypatch.setattr(BlockSampler, "_step", broken)
    with pytest.raises(RuntimeError, match="serving sampler is broken"):
        next(trainer.steps())
