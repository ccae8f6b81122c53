"""`torchrun --nproc_per_node 2` (gloo, CPU) takes the same update as one process with the
same global batch: each process takes half the batch and the gradients are summed, and the
teacher, sharded across the two (FSDP), scores as the whole teacher does."""

from __future__ import annotations

import json
from dataclasses import replace
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from avatar_train.config import OptimConfig
from avatar_train.trainer import STUDENT_FILE
from tests.train.helpers import tiny_config

pytestmark = pytest.mark.slow


def _train(world, out, config, launcher: list[str]) -> str:
    args = ["train", "--config", str(config), "--data", str(world.data), "--out", str(out), "--init",
            str(world.dit_file), "--teacher", str(world.dit_file), "--fresh"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*launcher, "-m", "avatar_train", *args], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_two_processes_take_the_same_update_as_one(world, tmp_path):
    # Adam's first steps are lr * sign(gradient): elements whose gradient is float noise would
    # flip. A large eps makes the update proportional to the gradient, so equal sums compare.
    optim = OptimConfig(1e-2, (0.0, 0.999), eps=1.0)
    # The two processes also shard the teacher (FSDP); one process has nothing to shard it over.
    cfg = tiny_config("dmd", fsdp_teacher=True)
    cfg = cfg.with_changes(dmd=replace(cfg.dmd, steps=3, generator_optim=optim, critic_optim=optim))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_json()))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    said = _train(world, tmp_path / "two", config, [torchrun, "--standalone", "--nproc_per_node", "2"])
    assert "teacher sharded over 2 processes" in said, said
    _train(world, tmp_path / "one", config, [sys.executable])
    two, one = load_file(str(tmp_path / "two" / STUDENT_FILE)), load_file(str(tmp_path / "one" / STUDENT_FILE))
    start = load_file(str(world.dit_file))
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(one[k], start[k].float()) for k in one)  # both moved, and moved alike
