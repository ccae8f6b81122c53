"""`python -m avatar_train.bench`: time one stage 2 iteration (a generator update and a critic
update: a Self-Forcing rollout, the guided teacher, the critic) at the released size with
random weights and random data, and report its memory. For a GPU; `--tiny` runs the same
path at test size on a CPU.

Everything is made in a temporary folder: the random DiT (student, critic and teacher start
from it; `--teacher 14B` gives the teacher the 14B shape), one shard of random latents,
features and prompt embeddings at the configured size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from avatar_node.engines.livetalk.config import DiTConfig
from avatar_node.engines.livetalk.model import LiveTalkDiT

from .config import TEACHER_14B, DMDConfig, TrainConfig
from .preprocess import MANIFEST, SHARDS
from .trainer import Inputs, Trainer


def _random_dit(cfg: DiTConfig, path: Path, seed: int) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = LiveTalkDiT(cfg)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _random_data(folder: Path, cfg: DiTConfig, latent_frames: int, latent_hw: int) -> Path:
    g = torch.Generator().manual_seed(0)
    video_frames = 4 * latent_frames - 3
    segment = {
        "latents": torch.randn((16, latent_frames, latent_hw, latent_hw), generator=g),
        "reference": torch.randn((16, latent_hw, latent_hw), generator=g),
        "audio": torch.randn((video_frames, cfg.audio_feature_dim), generator=g),
        "prompt": torch.randn((min(64, cfg.text_len), cfg.text_dim), generator=g) * 0.1,
    }
    (folder / SHARDS).mkdir(parents=True)
    torch.save([segment], folder / SHARDS / "random.pt")
    manifest = {"latent_frames": latent_frames, "fps": 16, "clips": {"random": {"segments": 1}}, "skipped": {}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def run(device: str, tiny: bool, teacher_size: str, latent_frames: int, iterations: int) -> dict[str, object]:
    dev = torch.device(device)
    dit = DiTConfig.tiny() if tiny else DiTConfig()
    teacher = DiTConfig(**TEACHER_14B) if teacher_size == "14B" and not tiny else dit  # type: ignore[arg-type]
    latent_hw = 4 if tiny else 64
    cfg = TrainConfig(
        stage="dmd",
        latent_frames=latent_frames,
        dit=dit,
        teacher=teacher,
        bf16=dev.type == "cuda",
        gradient_checkpointing=True,
        dmd=replace(DMDConfig(), steps=iterations, global_batch=1, critic_per_generator=1),
        log_every=10**9,
        sample_every=10**9,
        checkpoint_every=10**9,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student = _random_dit(dit, root / "student.safetensors", 0)
        teacher_file = student if teacher == dit else _random_dit(teacher, root / "teacher.safetensors", 1)
        data = _random_data(root / "data", dit, latent_frames, latent_hw)
        trainer = Trainer(cfg, Inputs(data, student, teacher=teacher_file), root / "run", device=device, resume=False)
        times = []
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in trainer.steps():
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter())
        trainer.close()
    steps = [b - a for a, b in zip([times[0]] + times[:-1], times)][1:] if len(times) > 1 else []
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "student": f"{dit.num_layers} layers x {dit.dim}",
        "teacher": f"{teacher.num_layers} layers x {teacher.dim}",
        "latent_frames": latent_frames,
        "latent_size": latent_hw,
        "iterations": len(times),
        "seconds_per_iteration_after_the_first": steps,
        "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avatar_train.bench", description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="test size (runs on a CPU)")
    parser.add_argument("--teacher", choices=("1.3B", "14B"), default="1.3B")
    parser.add_argument("--latent-frames", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=2, help="the first one includes warm-up")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.device, args.tiny, args.teacher, args.latent_frames, args.iterations), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
