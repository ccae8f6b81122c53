"""`avatar-node check-weights DIR`: is this weights directory complete and the right shape?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LAYOUT = """\
expected layout of DIR:
  LiveTalk-1.3B-V0.1/model.safetensors   huggingface.co/GAIR/LiveTalk-1.3B-V0.1
  LiveTalk-1.3B-V0.1/config.json         optional: other shapes (make-tiny-weights writes one)
  Wan2.1-T2V-1.3B/Wan2.1_VAE.pth         huggingface.co/Wan-AI/Wan2.1-T2V-1.3B
  Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth
  Wan2.1-T2V-1.3B/google/umt5-xxl/       the text encoder and its tokenizer (same repository);
                                         optional once every prompt is pre-encoded in prompts/
  wav2vec2-base-960h/                    huggingface.co/facebook/wav2vec2-base-960h
                                         (config.json, preprocessor_config.json, model.safetensors
                                         or pytorch_model.bin; the name wav2vec2/ also works)
  prompts/NAME.safetensors               pre-encoded prompts: "prompt_embeds" [tokens <= 512, 4096]
                                         (avatar-node encode-prompts DIR "prompt" ... writes them)
  taew2_1.pth                            optional: the tiny decoder for `serve --vae tiny`
                                         (github.com/madebyollin/taehv); checked when present

Nothing is loaded onto a device: safetensors headers are read and torch checkpoints are
memory-mapped on the meta device. Exit status 0 when everything is present and shaped
as the engine needs, 1 otherwise."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="avatar-node check-weights",
        description="Report what the livetalk engine's weights directory holds: present, missing, "
        "unexpected or wrongly shaped tensors of the DiT, VAE, wav2vec2, prompt embeddings and the "
        "optional tiny VAE decoder.",
        epilog=LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", type=Path, help="the weights directory (layout below)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    try:
        from .weights import check_weights_dir
    except ImportError as exc:
        print(
            f"check-weights needs the diffusion extra ({exc}); install it with: pip install 'avatar-node[diffusion]'",
            file=sys.stderr,
        )
        return 1

    if not args.directory.is_dir():
        print(f"{args.directory} is not a directory\n\n{LAYOUT}", file=sys.stderr)
        return 1
    reports = check_weights_dir(args.directory)
    if args.json:
        payload = [
            {
                "component": r.name,
                "path": str(r.path),
                "ok": r.ok,
                "found": r.found,
                "missing": r.missing,
                "unexpected": r.unexpected,
                "wrong_shape": [{"name": n, "expected": list(w), "found": list(g)} for n, w, g in r.mis_shaped],
                "problems": r.problems,
                "notes": r.notes,
            }
            for r in reports
        ]
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print("\n\n".join(r.describe() for r in reports))
        bad = [r.name for r in reports if not r.ok]
        print(f"\n{'all components ok' if not bad else 'problems in: ' + ', '.join(bad)}")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
