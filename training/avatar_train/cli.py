"""`avatar-train`: the recipe's commands, in the order a run uses them.

    avatar-train synthetic CLIPS_DIR                      a synthetic talking dataset (tests, a dry run)
    avatar-train merge-omniavatar PT OUT --base WAN...    an OmniAvatar teacher in the node's key layout
    avatar-train preprocess CLIPS_DIR DATA_DIR --weights W cache latents, audio features, prompts
    avatar-train trajectories DATA_DIR --teacher T ...     the teacher's ODE trajectories (stage 1 targets)
    avatar-train train --config C --data DATA_DIR ...      stage 1 or 2 (torchrun for several processes)
    avatar-train export STUDENT --base W OUT               a weights directory the node serves

Several processes: ``torchrun --nproc_per_node N -m avatar_train train ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="avatar-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synthetic", help="write a synthetic talking-head dataset (video + speech)")
    s.add_argument("folder", type=Path)
    s.add_argument("--clips", type=int, default=4)
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("preprocess", help="clips -> cached shards and a manifest (resumable)")
    s.add_argument("clips", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--weights", type=Path, required=True, help="a livetalk weights directory (VAE, wav2vec2, prompts)")
    s.add_argument("--latent-frames", type=int, default=21)
    s.add_argument("--crop", choices=("face", "centre"), default="face", help="find the face, or take the centre")
    s.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="how shards store tensors")
    s.add_argument("--device", default="cpu")

    s = sub.add_parser("merge-omniavatar", help="an OmniAvatar teacher (Wan2.1 base + LoRA) as one file")
    s.add_argument("omniavatar", type=Path, help="OmniAvatar's pytorch_model.pt")
    s.add_argument("out", type=Path, help="the merged .safetensors to write")
    s.add_argument("--base", type=Path, nargs="+", required=True, help="Wan2.1 diffusion_pytorch_model*.safetensors")
    s.add_argument("--size", choices=("1.3B", "14B"), default="14B")
    s.add_argument("--lora-rank", type=int, default=128)
    s.add_argument("--lora-alpha", type=float, default=64.0)

    s = sub.add_parser("trajectories", help="the teacher's trajectories for every cached segment")
    s.add_argument("data", type=Path)
    s.add_argument("--teacher", type=Path, required=True)
    s.add_argument("--config", type=Path, help="training config JSON (teacher shape, steps, guidance)")
    s.add_argument("--out", type=Path, help="default: DATA")
    s.add_argument("--per-segment", type=int, default=1)
    s.add_argument("--device", default="cpu")

    s = sub.add_parser("train", help="run stage 1 (ode) or stage 2 (dmd) as the config says; resumes")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--init", type=Path, required=True, help="the student's starting DiT weights")
    s.add_argument("--trajectories", type=Path)
    s.add_argument("--teacher", type=Path)
    s.add_argument("--critic", type=Path)
    s.add_argument("--vae-weights", type=Path, help="a weights directory whose VAE decodes the logged samples")
    s.add_argument("--steps", type=int, help="stop after this step (default: the config's)")
    s.add_argument("--fresh", action="store_true", help="ignore checkpoints in OUT")
    s.add_argument("--device", default="cpu")

    s = sub.add_parser("export", help="a trained student -> a weights directory for avatar-node serve")
    s.add_argument("student", type=Path, help="student.safetensors written by train")
    s.add_argument("--base", type=Path, required=True, help="the weights directory it was trained against")
    s.add_argument("--config", type=Path, help="training config JSON (the student's shapes)")
    s.add_argument("out", type=Path)
    return p


def _config(path: Path | None):  # noqa: ANN202
    from .config import TrainConfig

    return TrainConfig.load(path) if path else TrainConfig()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    if args.command == "synthetic":
        from .synthetic import write_dataset

        paths = write_dataset(args.folder, args.clips, args.seconds, seed=args.seed, size=args.size)
        print(f"{len(paths)} clips in {args.folder}")
        return EXIT_OK
    if args.command == "preprocess":
        from .preprocess import Encoders, centre_face, engine_face_finder, find_clips, preprocess

        enc = Encoders.from_weights(args.weights, args.device)
        finder = engine_face_finder() if args.crop == "face" else centre_face
        import torch

        dtype = getattr(torch, args.dtype)
        manifest = preprocess(find_clips(args.clips), args.out, enc, args.latent_frames, finder, dtype=dtype)
        print(json.dumps({k: manifest[k] for k in ("segments", "seconds")} | {"skipped": len(manifest["skipped"])}))
        return EXIT_OK if manifest["segments"] else EXIT_FAILED
    if args.command == "merge-omniavatar":
        from safetensors.torch import save_file

        from avatar_node.engines.livetalk.config import DiTConfig

        from .config import TEACHER_14B
        from .omniavatar import merge_omniavatar

        dit = DiTConfig(**TEACHER_14B) if args.size == "14B" else DiTConfig()  # type: ignore[arg-type]
        state = merge_omniavatar(args.base, args.omniavatar, dit, rank=args.lora_rank, alpha=args.lora_alpha)
        save_file(state, str(args.out))
        print(f"merged {args.size} teacher written to {args.out} ({len(state)} tensors)")
        return EXIT_OK
    if args.command == "trajectories":
        from .dataset import ShardDataset
        from .teacher import load_teacher
        from .trajectories import make_trajectories

        cfg = _config(args.config)
        teacher = load_teacher(args.teacher, cfg.teacher, args.device)
        path = make_trajectories(
            teacher,
            ShardDataset(args.data),
            cfg,
            args.out or args.data,
            per_segment=args.per_segment,
            device=args.device,
        )
        print(f"trajectories written to {path}")
        return EXIT_OK
    if args.command == "train":
        from .trainer import Inputs, Trainer

        cfg = _config(args.config)
        inputs = Inputs(args.data, args.init, args.trajectories, args.teacher, args.critic, args.vae_weights)
        trainer = Trainer(cfg, inputs, args.out, device=args.device, resume=not args.fresh)
        trainer.run(args.steps)
        return EXIT_OK
    if args.command == "export":
        from .export import export_weights

        cfg = _config(args.config)
        out = export_weights(args.student, cfg.dit, args.base, args.out)
        print(f"weights directory written to {out}; serve it with: avatar-node serve --engine livetalk --weights {out}")
        return EXIT_OK
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
