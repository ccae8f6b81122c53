"""`avatar-node encode-prompts DIR "prompt" ...`: pre-encode prompts so the engine never loads umT5.

The umT5-XXL encoder (about 11 GB) is loaded once for all prompts that are not cached yet,
then dropped; the embeddings go to DIR/prompts/ (see prompts.py). Without prompts, the
default prompt and the behaviour prompts are encoded. A prompts/ folder made on a machine
with the encoder can be copied to one without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="avatar-node encode-prompts",
        description="Encode text prompts with the umT5 encoder of a livetalk weights directory and cache "
        "them in DIR/prompts/, so sessions can use them without the encoder in memory.",
    )
    parser.add_argument("directory", type=Path, help="the weights directory")
    parser.add_argument("prompts", nargs="*", help="prompt texts (default: the default and behaviour prompts)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    args = parser.parse_args(argv)

    try:
        import torch

        from .engine import resolve_device
        from .prompts import BEHAVIOUR_PROMPTS, DEFAULT_PROMPT, PromptStore
        from .text_encoder import PromptEncoder
        from .weights import (
            PROMPTS_DIR,
            TEXT_ENCODER_FILE,
            TOKENIZER_DIR,
            load_model_config,
        )
    except ImportError as exc:
        print(
            f"error: encode-prompts needs the diffusion extra ({exc}): pip install 'avatar-node[diffusion]'",
            file=sys.stderr,
        )
        return 2
    root: Path = args.directory
    if not (root / TEXT_ENCODER_FILE).is_file() or not (root / TOKENIZER_DIR).is_dir():
        print(
            f"error: {root} has no text encoder: put models_t5_umt5-xxl-enc-bf16.pth and google/umt5-xxl/ "
            f"(from Wan-AI/Wan2.1-T2V-1.3B) under {root / TEXT_ENCODER_FILE.parent}",
            file=sys.stderr,
        )
        return 1
    try:
        cfg = load_model_config(root)
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def encoder() -> PromptEncoder:
        return PromptEncoder(
            root / TEXT_ENCODER_FILE, root / TOKENIZER_DIR, cfg.text_encoder, device=device, dtype=dtype
        )

    prompts = args.prompts or [DEFAULT_PROMPT, *BEHAVIOUR_PROMPTS.values()]
    store = PromptStore(root / PROMPTS_DIR, encoder)
    cached = {p for p in prompts if store.has(p)}
    try:
        paths = store.encode(prompts)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for prompt, path in zip(prompts, paths):
        state = "cached " if prompt in cached else "encoded"
        print(f"{state}  {path.relative_to(root)}  {prompt[:70]}{'...' if len(prompt) > 70 else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
