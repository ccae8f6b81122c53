"""Time one block step of the livetalk DiT: 4 denoising passes + the t=0 cache pass.

Random weights, steady state (the attention window already full: 9 sinks + 3 recent
frames + the block itself). Prints ms per block step and the implied generated fps
(a block is 3 latent frames = 12 video frames at 16 fps, i.e. 0.75 s of video).

    python benchmarks/livetalk_block_bench.py --tiny                  # CPU smoke run
    python benchmarks/livetalk_block_bench.py --device cuda           # 1.3B, bf16, 512x512
    python benchmarks/livetalk_block_bench.py --device cuda --batch 2 # two sessions per step

Needs the [diffusion] extra (torch).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from avatar_node.engines.livetalk.config import DiTConfig, StreamConfig
from avatar_node.engines.livetalk.model import LiveTalkDiT
from avatar_node.engines.livetalk.sampler import BlockSampler

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
VIDEO_FPS = 16.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny network and 64x64 video (8x8 latent)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--size", type=int, default=None, help="video width = height in pixels (default 512, tiny 64)")
    parser.add_argument("--batch", type=int, default=1, help="sessions per block step")
    parser.add_argument("--blocks", type=int, default=10, help="timed block steps")
    parser.add_argument("--positions", choices=["window", "absolute"], default="window")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cfg = DiTConfig.tiny() if args.tiny else DiTConfig()
    size = args.size or (64 if args.tiny else 512)
    latent = size // 8
    stream = StreamConfig(positions=args.positions)
    torch.manual_seed(0)
    with torch.device(device):
        model = LiveTalkDiT(cfg)
    model = model.to(dtype).eval().requires_grad_(False)
    sampler = BlockSampler(model, stream)
    sessions = [
        sampler.open_session(torch.randn(16, latent, latent), torch.randn(cfg.text_len, cfg.text_dim), seed=i)
        for i in range(args.batch)
    ]
    audio = torch.randn(args.batch, stream.frames_per_block, cfg.audio_frames_per_latent, cfg.audio_feature_dim, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Fill the window so every timed step attends to the full 15 frames.
    warmup = stream.window_frames // stream.frames_per_block + 1
    for _ in range(warmup):
        sampler.step(sessions, audio)
    sync()
    times = []
    for _ in range(args.blocks):
        start = time.perf_counter()
        sampler.step(sessions, audio)
        sync()
        times.append(time.perf_counter() - start)

    ms = 1000 * statistics.median(times)
    video_frames = stream.frames_per_block * cfg.audio_frames_per_latent * args.batch
    fps = video_frames / (ms / 1000)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tokens = (latent // 2) ** 2
    print(f"device: {name}  dtype: {str(dtype).removeprefix('torch.')}  torch {torch.__version__}")
    print(f"model: {'tiny' if args.tiny else '1.3B'} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params), "
          f"{size}x{size} video, {tokens} tokens/latent frame, window {stream.window_frames} frames "
          f"({stream.sink_frames} sinks), batch {args.batch}")
    print(f"block step (4 steps + cache pass): median {ms:.1f} ms, min {1000 * min(times):.1f} ms over {args.blocks}")
    print(f"per DiT forward: {ms / (stream.num_steps + 1):.1f} ms")
    print(f"generated: {fps:.1f} fps ({fps / VIDEO_FPS:.2f}x real time at {VIDEO_FPS:.0f} fps; goal 32 fps = 2x)")
    print(f"KV cache per session: {sessions[0].cache.nbytes / 2**20:.1f} MiB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
