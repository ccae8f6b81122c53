"""A run stopped after k steps and resumed ends bit-identical to one that never stopped
(generator, critic, EMA and both optimizers), through the stage 2 loop."""

from __future__ import annotations

import torch

from avatar_train.trainer import Inputs, Trainer
from tests.train.helpers import tiny_config


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    assert trainer.critic is not None and trainer.critic_optim is not None and trainer.ema is not None
    out = {f"g.{k}": v for k, v in trainer.generator.state_dict().items()}
    out |= {f"c.{k}": v for k, v in trainer.critic.state_dict().items()}
    out |= {f"ema.{k}": v for k, v in trainer.ema.items()}
    for name, optim in (("go", trainer.optim), ("co", trainer.critic_optim)):
        for i, s in optim.state_dict()["state"].items():
            out |= {f"{name}.{i}.{k}": v for k, v in s.items() if isinstance(v, torch.Tensor)}
    return out


def test_resume_is_bit_identical(world, tmp_path):
    cfg = tiny_config("dmd")
    inputs = Inputs(world.data, world.dit_file, teacher=world.dit_file)
    whole = Trainer(cfg, inputs, tmp_path / "whole")
    list(whole.steps(5))

    first = Trainer(cfg, inputs, tmp_path / "parts")
    list(first.steps(3))
    first.save_checkpoint()
    first.close()
    second = Trainer(cfg, inputs, tmp_path / "parts")
    assert second.step == 3
    list(second.steps(5))

    a, b = _state(whole), _state(second)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # And the run did move: the generator is not where it started.
    start = Trainer(cfg, inputs, tmp_path / "fresh", resume=False).generator.state_dict()
    assert any(not torch.equal(v, whole.generator.state_dict()[k]) for k, v in start.items())
