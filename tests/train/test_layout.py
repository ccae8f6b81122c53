"""The node never imports the training package; the training package has no import cycle;
the config's defaults are the release's recipe and a config file cannot hide a typo."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from avatar_train.config import TrainConfig
from tests import test_code_layout as layout

ROOT = Path(__file__).resolve().parents[2]


def test_the_node_never_imports_avatar_train():
    found = []
    for path in (ROOT / "avatar_node").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "avatar_train"]
    assert not found, found


def test_avatar_train_has_no_import_cycle(monkeypatch):
    monkeypatch.setitem(layout.PACKAGES, "avatar_train", ROOT / "training" / "avatar_train")
    graph = layout.import_graph()
    assert any(m.startswith("avatar_train") for m in graph)
    assert not layout.import_cycles(graph)


def test_the_defaults_are_the_release_recipe():
    cfg = TrainConfig()
    assert (cfg.ode.optim.lr, cfg.ode.optim.betas, cfg.ode.global_batch) == (4e-5, (0.9, 0.999), 64)
    assert cfg.latent_frames == 21 and cfg.stream.frames_per_block == 3 and cfg.stream.num_steps == 4
    d = cfg.dmd
    assert (d.generator_optim.lr, d.critic_optim.lr, d.generator_optim.betas) == (4e-6, 8e-7, (0.0, 0.999))
    assert (d.critic_per_generator, d.guidance_scale, d.ema_decay, d.ema_start_step) == (5, 6.0, 0.99, 200)
    assert (d.timestep_shift, d.min_timestep, d.max_timestep) == (5.0, 20.0, 980.0)
    assert (d.masked_blocks, d.critic_masked_frames) == (1, 1)


def test_a_config_file_round_trips_and_refuses_unknown_fields():
    cfg = TrainConfig(teacher=TrainConfig.from_json({"teacher": "14B"}).teacher)
    assert cfg.teacher.dim == 5120 and cfg.teacher.num_layers == 40
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown field.*critic_per_generater"):
        TrainConfig.from_json({"dmd": {"critic_per_generater": 3}})
    with pytest.raises(ValueError, match="multiple of the student"):
        TrainConfig.from_json({"ode": {"teacher_steps": 10}})
