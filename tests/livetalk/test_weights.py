"""Weights: release key names load as they are; check-weights names every problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from avatar_node import cli  # noqa: E402
from avatar_node.engines.livetalk import check_weights  # noqa: E402
from avatar_node.engines.livetalk import model as model_module
from avatar_node.engines.livetalk.config import StreamConfig  # noqa: E402
from avatar_node.engines.livetalk.sampler import BlockSampler  # noqa: E402
from avatar_node.engines.livetalk.weights import (  # noqa: E402
    CONFIG_FILE,
    DIT_FILE,
    PROMPTS_DIR,
    TEXT_ENCODER_FILE,
    VAE_FILE,
    load_dit,
    load_model_config,
)

from .conftest import audio_for  # noqa: E402


def rewrite_dit(weights_dir: Path, edit) -> None:
    path = weights_dir / DIT_FILE
    state = dict(safetensors_torch.load_file(str(path)))
    edit(state)
    safetensors_torch.save_file(state, str(path))


def report_of(root: Path, capsys) -> dict:
    rc = check_weights.main([str(root), "--json"])
    report = {r["component"].split()[0]: r for r in json.loads(capsys.readouterr().out)}
    report["rc"] = rc
    return report


def test_tiny_directory_passes_and_loads(tiny_weights: Path, capsys):
    assert cli.main(["check-weights", str(tiny_weights)]) == 0
    assert "all components ok" in capsys.readouterr().out

    cfg = load_model_config(tiny_weights)
    reference = load_dit(tiny_weights / DIT_FILE, cfg.dit, dtype=torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        loaded = load_dit(tiny_weights / DIT_FILE, cfg.dit, dtype=dtype)
        for name, tensor in reference.state_dict().items():
            assert loaded.state_dict()[name].dtype == dtype
            torch.testing.assert_close(loaded.state_dict()[name].float(), tensor.to(dtype).float())
    sampler = BlockSampler(reference, StreamConfig())
    session = sampler.open_session(torch.randn(16, 4, 4), torch.randn(3, cfg.dit.text_dim))
    assert torch.isfinite(sampler.step([session], audio_for(cfg.dit, 1, sampler.stream, 0))).all()


def test_make_tiny_weights_command(tmp_path: Path, capsys):
    assert cli.main(["make-tiny-weights", str(tmp_path / "w"), "--size", "48"]) == 0
    assert load_model_config(tmp_path / "w").video_height == 48
    assert check_weights.main([str(tmp_path / "w")]) == 0
    assert cli.main(["make-tiny-weights", str(tmp_path / "v"), "--size", "40"]) == 2


def test_training_checkpoint_prefix_is_mapped(tiny_weights_copy: Path, capsys):
    rewrite_dit(tiny_weights_copy, lambda s: s.update({f"model.{k}": s.pop(k) for k in list(s)}))
    assert check_weights.main([str(tiny_weights_copy)]) == 0
    assert "prefix 'model.'" in capsys.readouterr().out
    load_dit(tiny_weights_copy / DIT_FILE, load_model_config(tiny_weights_copy).dit)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.pop("blocks.3.cross_attn.norm_k.weight"), "missing: blocks.3.cross_attn.norm_k.weight"),
        (lambda s: s.update({"blocks.0.extra.weight": torch.zeros(2)}), "unexpected: blocks.0.extra.weight"),
        (
            lambda s: s.update({"audio_cond_projs.1.weight": torch.zeros(48, 9)}),
            "wrong shape: audio_cond_projs.1.weight is [48, 9], expected [48, 8]",
        ),
    ],
    ids=["missing", "extra", "shape"],
)
def test_dit_problems_are_named(tiny_weights_copy: Path, capsys, edit, expected):
    rewrite_dit(tiny_weights_copy, edit)
    assert check_weights.main([str(tiny_weights_copy)]) == 1
    out = capsys.readouterr().out
    assert expected in out
    assert "problems in: DiT" in out
    with pytest.raises(ValueError, match="cannot load the DiT"):
        load_dit(tiny_weights_copy / DIT_FILE, load_model_config(tiny_weights_copy).dit)


def test_every_other_file_is_checked(tiny_weights_copy: Path, capsys):
    root = tiny_weights_copy
    vae = torch.load(root / VAE_FILE)
    vae["decoder.head.2.weight"] = torch.zeros(4, 8, 3, 3, 3)
    del vae["decoder.upsamples.7.time_conv.bias"]
    torch.save(vae, root / VAE_FILE)
    t5 = torch.load(root / TEXT_ENCODER_FILE)
    del t5["blocks.1.pos_embedding.embedding.weight"]
    torch.save(t5, root / TEXT_ENCODER_FILE)
    w2v = root / "wav2vec2-base-960h"
    (w2v / "preprocessor_config.json").unlink()
    state = safetensors_torch.load_file(str(w2v / "model.safetensors"))
    del state["wav2vec2.encoder.layers.1.attention.k_proj.weight"]
    safetensors_torch.save_file(state, str(w2v / "model.safetensors"))

    report = report_of(root, capsys)
    assert report["rc"] == 1
    assert report["DiT"]["ok"] and report["shapes"]["ok"] and report["prompt"]["ok"]
    assert report["VAE"]["missing"] == ["decoder.upsamples.7.time_conv.bias"]
    assert report["VAE"]["wrong_shape"] == [{"name": "decoder.head.2.weight", "expected": [3, 8, 3, 3, 3], "found": [4, 8, 3, 3, 3]}]
    assert report["text"]["missing"] == ["blocks.1.pos_embedding.embedding.weight"]
    assert report["wav2vec2"]["problems"] == ["preprocessor_config.json is missing"]
    assert report["wav2vec2"]["missing"] == ["encoder.layers.1.attention.k_proj.weight"]


def test_prompts_or_encoder_must_give_the_default_prompt(tiny_weights_copy: Path, capsys):
    root = tiny_weights_copy
    (root / TEXT_ENCODER_FILE).unlink()
    assert check_weights.main([str(root)]) == 0  # pre-encoded prompts are enough
    capsys.readouterr()
    shutil.rmtree(root / PROMPTS_DIR)
    report = report_of(root, capsys)
    assert report["rc"] == 1
    assert "the default prompt is not pre-encoded and there is no text encoder" in report["prompt"]["problems"][0]


def test_config_and_missing_files_are_named(tiny_weights_copy: Path, tmp_path: Path, capsys):
    root = tiny_weights_copy
    (root / CONFIG_FILE).write_text(json.dumps({"dit": {"dim": 48, "layers": 3}}))
    report = report_of(root, capsys)
    assert "unknown field(s) in 'dit': layers" in report["shapes"]["problems"][0]
    (root / CONFIG_FILE).unlink()  # the released shapes are then expected: the tiny DiT fails
    report = report_of(root, capsys)
    assert report["rc"] == 1 and not report["DiT"]["ok"] and report["DiT"]["wrong_shape"]
    (root / VAE_FILE).unlink()
    report = report_of(root, capsys)
    assert not report["VAE"]["found"]
    assert check_weights.main([str(tmp_path / "nowhere")]) == 1


def test_truncated_file(tiny_weights_copy: Path, capsys):
    w2v = tiny_weights_copy / "wav2vec2-base-960h" / "model.safetensors"
    with w2v.open("r+b") as f:
        f.truncate(w2v.stat().st_size // 2)
    assert check_weights.main([str(tiny_weights_copy)]) == 1
    assert "truncated" in capsys.readouterr().out


def test_full_size_keys_on_meta(capsys):
    assert model_module.main(["--keys"]) == 0
    shapes = json.loads(capsys.readouterr().out)
    assert shapes["patch_embedding.weight"] == [1536, 33, 1, 2, 2]
    assert shapes["text_embedding.0.weight"] == [1536, 4096]
    assert shapes["time_projection.1.weight"] == [9216, 1536]
    assert shapes["blocks.29.ffn.0.weight"] == [8960, 1536]
    assert shapes["blocks.0.self_attn.norm_q.weight"] == [1536]
    assert shapes["blocks.0.modulation"] == [1, 6, 1536]
    assert shapes["head.head.weight"] == [64, 1536]
    assert shapes["audio_proj.proj.weight"] == [32, 43008]
    assert shapes["audio_proj.norm_out.weight"] == [32]
    assert sorted(k for k in shapes if k.startswith("audio_cond_projs") and k.endswith("weight"))[-1] == "audio_cond_projs.9.weight"
    assert sum(k.startswith("audio_cond_projs.") for k in shapes) == 28  # 14 layers, weight + bias
    assert not any(k.startswith("blocks.30.") for k in shapes)
