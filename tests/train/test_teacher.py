"""The teacher: the node's DiT with full attention (a frame sees later frames, unlike the
causal student), guided as cond + (s - 1)(cond - uncond), loaded by its own key names."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from avatar_train.batch import Batch
from avatar_train.teacher import bidirectional_flow, guided_flow, load_teacher
from tests.train.helpers import tiny_config


def test_full_attention_sees_later_frames(world):
    batch = Batch.of([world.dataset[0]])
    x = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(0))
    moved = x.clone()
    moved[:, :, -1] += 1.0
    sigma = torch.tensor([0.5])
    with torch.no_grad():
        a, b = (bidirectional_flow(world.teacher, v, sigma, batch) for v in (x, moved))
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])  # frame 1 changed because the last frame did


def test_guidance_is_cond_plus_scale_minus_one_times_the_difference(world):
    batch = Batch.of([world.dataset[0]])
    x = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.8])
    with torch.no_grad():
        cond = bidirectional_flow(world.teacher, x, sigma, batch)
        uncond = bidirectional_flow(world.teacher, x, sigma, batch.unconditional())
        guided = guided_flow(world.teacher, x, sigma, batch, 6.0)
    torch.testing.assert_close(guided, cond + 5.0 * (cond - uncond))
    assert not torch.allclose(cond, uncond)
    assert batch.unconditional().prompts[0].shape[0] == 0 and not batch.unconditional().audio.any()


def test_a_teacher_checkpoint_with_a_training_prefix_loads_by_its_names(world, tmp_path):
    state = load_file(str(world.dit_file))
    save_file({f"model.{k}": v for k, v in state.items()}, str(tmp_path / "teacher.safetensors"))
    teacher = load_teacher(tmp_path / "teacher.safetensors", tiny_config().teacher)
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in state.items())
    del state["head.head.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    try:
        load_teacher(tmp_path / "broken.safetensors", tiny_config().teacher)
    except ValueError as exc:
        assert "missing: head.head.weight" in str(exc)
    else:
        raise AssertionError("a teacher with a missing tensor loaded")
