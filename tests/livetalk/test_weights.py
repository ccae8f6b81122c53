"""Weights: release key names load as they are; check-weights names every problem."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from avatar_node.engines.livetalk import check_weights, model as model_module  # noqa: E402
from avatar_node.engines.livetalk.config import DiTConfig, StreamConfig  # noqa: E402
from avatar_node.engines.livetalk.sampler import BlockSampler  # noqa: E402
from avatar_node.engines.livetalk.weights import (  # noqa: E402
    DIT_FILE,
    VAE_EXPECTED,
    VAE_FILE,
    WAV2VEC_EXPECTED,
    load_dit,
)

from .conftest import audio_for, make_model  # noqa: E402


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A valid safetensors header over a sparse (unwritten) data section: real layout, no disk cost."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * int(torch.tensor(shape).prod())
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    cfg = DiTConfig.tiny()
    model = make_model(cfg)
    dit = tmp_path / DIT_FILE
    dit.parent.mkdir(parents=True)
    safetensors_torch.save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(dit))

    vae = tmp_path / VAE_FILE
    vae.parent.mkdir(parents=True)
    torch.save({k: torch.zeros(s, dtype=torch.bfloat16) for k, s in VAE_EXPECTED.items()}, vae)

    w2v = tmp_path / "wav2vec2"
    w2v.mkdir()
    (w2v / "config.json").write_text(json.dumps({"hidden_size": 768, "num_hidden_layers": 12}))
    (w2v / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000}))
    shapes = {f"wav2vec2.{k}": s for k, s in WAV2VEC_EXPECTED.items()}
    shapes["lm_head.weight"] = (32, 768)
    write_sparse_safetensors(w2v / "model.safetensors", shapes)

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    safetensors_torch.save_file({"prompt_embeds": torch.randn(5, cfg.text_dim)}, str(prompts / "talking.safetensors"))
    return tmp_path


def rewrite_dit(weights_dir: Path, edit) -> None:
    path = weights_dir / DIT_FILE
    state = dict(safetensors_torch.load_file(str(path)))
    edit(state)
    safetensors_torch.save_file(state, str(path))


def test_complete_directory_passes_and_loads(weights_dir: Path, capsys):
    assert check_weights.main([str(weights_dir), "--tiny"]) == 0
    assert "all components ok" in capsys.readouterr().out

    reference = make_model(DiTConfig.tiny())
    for dtype in (torch.bfloat16, torch.float16):
        loaded = load_dit(weights_dir / DIT_FILE, DiTConfig.tiny(), dtype=dtype)
        for name, tensor in reference.state_dict().items():
            assert loaded.state_dict()[name].dtype == dtype
            torch.testing.assert_close(loaded.state_dict()[name].float(), tensor.to(torch.bfloat16).float().to(dtype).float())
    # The loaded model samples.
    loaded = load_dit(weights_dir / DIT_FILE, DiTConfig.tiny(), dtype=torch.float32)
    sampler = BlockSampler(loaded, StreamConfig())
    session = sampler.open_session(torch.randn(16, 4, 4), torch.randn(3, loaded.cfg.text_dim))
    assert torch.isfinite(sampler.step([session], audio_for(loaded.cfg, 1, sampler.stream, 0))).all()


def test_training_checkpoint_prefix_is_mapped(weights_dir: Path, capsys):
    rewrite_dit(weights_dir, lambda s: s.update({f"model.{k}": s.pop(k) for k in list(s)}))
    assert check_weights.main([str(weights_dir), "--tiny"]) == 0
    assert "prefix 'model.'" in capsys.readouterr().out
    load_dit(weights_dir / DIT_FILE, DiTConfig.tiny())


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
def test_dit_problems_are_named(weights_dir: Path, capsys, edit, expected):
    rewrite_dit(weights_dir, edit)
    assert check_weights.main([str(weights_dir), "--tiny"]) == 1
    out = capsys.readouterr().out
    assert expected in out
    assert "problems in: DiT" in out
    with pytest.raises(ValueError, match="cannot load the DiT"):
        load_dit(weights_dir / DIT_FILE, DiTConfig.tiny())


def test_other_components_are_checked(weights_dir: Path, capsys):
    vae = weights_dir / VAE_FILE
    state = torch.load(vae)
    state["decoder.head.2.weight"] = torch.zeros(4, 96, 3, 3, 3)
    del state["conv2.bias"]
    torch.save(state, vae)
    (weights_dir / "wav2vec2" / "preprocessor_config.json").unlink()
    for p in (weights_dir / "prompts").iterdir():
        p.unlink()

    assert check_weights.main([str(weights_dir), "--tiny", "--json"]) == 1
    report = {r["component"].split()[0]: r for r in json.loads(capsys.readouterr().out)}
    assert report["DiT"]["ok"]
    assert report["VAE"]["missing"] == ["conv2.bias"]
    assert report["VAE"]["wrong_shape"] == [{"name": "decoder.head.2.weight", "expected": [3, 96, 3, 3, 3], "found": [4, 96, 3, 3, 3]}]
    assert report["wav2vec2"]["problems"] == ["preprocessor_config.json is missing"]
    assert not report["text"]["found"]


def test_missing_directory_and_truncated_file(tmp_path: Path, weights_dir: Path, capsys):
    assert check_weights.main([str(tmp_path / "nowhere")]) == 1
    w2v = weights_dir / "wav2vec2" / "model.safetensors"
    with w2v.open("r+b") as f:
        f.truncate(w2v.stat().st_size // 2)
    assert check_weights.main([str(weights_dir), "--tiny"]) == 1
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
