"""An OmniAvatar-style teacher (a Wan2.1 base with a 16-channel patch embedding, plus a file of
PEFT LoRA pairs, audio modules and the 33-channel patch embedding) merges into the node's key
layout: W + alpha / rank * B @ A, the rest overlaid, checked by name and shape."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from avatar_node.engines.livetalk.model import parameter_shapes
from avatar_train.cli import main
from avatar_train.omniavatar import merge_omniavatar
from avatar_train.teacher import load_teacher
from tests.train.helpers import tiny_config

RANK, ALPHA = 4, 2.0


def _parts(tmp_path):
    cfg = tiny_config().teacher
    g = torch.Generator().manual_seed(0)
    shapes = parameter_shapes(cfg)
    target = {k: torch.randn(v, generator=g) for k, v in shapes.items()}
    own = ("audio_proj.", "audio_cond_projs.", "patch_embedding.")
    base = {k: v for k, v in target.items() if not k.startswith(own)}
    base["patch_embedding.weight"] = torch.randn((cfg.dim, 16, 1, 2, 2), generator=g)  # Wan2.1 T2V: 16 channels
    base["patch_embedding.bias"] = torch.randn(cfg.dim, generator=g)
    update = {k: v for k, v in target.items() if k.startswith(own)}
    targets = [k[: -len(".weight")] for k in shapes if k.endswith(".weight") and k.startswith("blocks.")
               and k.split(".")[-2] in ("q", "k", "v", "o", "0", "2") and ".norm" not in k]
    for module in targets:
        out_dim, in_dim = shapes[f"{module}.weight"]
        update[f"{module}.lora_A.default.weight"] = torch.randn((RANK, in_dim), generator=g)
        update[f"{module}.lora_B.default.weight"] = torch.randn((out_dim, RANK), generator=g)
    return cfg, base, update, targets


def test_lora_pairs_fold_into_the_base_and_the_rest_is_overlaid(tmp_path):
    cfg, base, update, targets = _parts(tmp_path)
    save_file(base, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    torch.save(update, tmp_path / "pytorch_model.pt")
    merged = merge_omniavatar([tmp_path / "diffusion_pytorch_model.safetensors"], tmp_path / "pytorch_model.pt", cfg,
                              rank=RANK, alpha=ALPHA)
    assert len(targets) == 10 * cfg.num_layers  # q, k, v, o of both attentions, ffn.0, ffn.2
    for module in targets:
        a, b = update[f"{module}.lora_A.default.weight"], update[f"{module}.lora_B.default.weight"]
        torch.testing.assert_close(merged[f"{module}.weight"], base[f"{module}.weight"] + ALPHA / RANK * (b @ a))
    assert torch.equal(merged["patch_embedding.weight"], update["patch_embedding.weight"])
    assert torch.equal(merged["audio_cond_projs.0.weight"], update["audio_cond_projs.0.weight"])

    # From the command line, to a file the teacher loader reads by its names.
    out = tmp_path / "teacher.safetensors"
    assert main(["merge-omniavatar", str(tmp_path / "pytorch_model.pt"), str(out), "--base",
                 str(tmp_path / "diffusion_pytorch_model.safetensors"), "--size", "1.3B", "--lora-rank", "4",
                 "--lora-alpha", "2"]) == 1  # the 1.3B shapes are not the tiny ones: refused, not guessed
    save_file(merged, str(out))
    teacher = load_teacher(out, cfg)
    assert torch.equal(teacher.state_dict()["blocks.0.ffn.0.weight"], merged["blocks.0.ffn.0.weight"])


def test_a_missing_audio_module_or_half_a_pair_is_named(tmp_path):
    cfg, base, update, targets = _parts(tmp_path)
    save_file(base, str(tmp_path / "base.safetensors"))
    del update["audio_proj.proj.weight"]
    torch.save(update, tmp_path / "omni.pt")
    with pytest.raises(ValueError, match="missing: audio_proj.proj.weight"):
        merge_omniavatar([tmp_path / "base.safetensors"], tmp_path / "omni.pt", cfg, rank=RANK, alpha=ALPHA)
    del update[f"{targets[0]}.lora_B.default.weight"]
    torch.save(update, tmp_path / "omni.pt")
    with pytest.raises(ValueError, match="only lora_A"):
        merge_omniavatar([tmp_path / "base.safetensors"], tmp_path / "omni.pt", cfg, rank=RANK, alpha=ALPHA)
