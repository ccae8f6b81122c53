"""Pipecat video service latency, from the frames it pushes down the pipeline (pixels measured).

    python benchmarks/pipecat_latency.py [--mode in-process|node|both] [--runs 5]

- TTS audio -> face: from the first TTSAudioRawFrame of a reply reaching the service, to the
  first picture it pushes that shows that speech;
- interruption -> idle: from an InterruptionFrame reaching the service, to the first picture
  it pushes that shows no speech (its speech audio stops there too).

Uses the test-card engine (its level bar shows each frame's speech exactly), 640x360 at
25 fps, a real Pipecat pipeline (PipelineWorker) with a scripted TTS in front of the service,
and for node mode a real node over gRPC on loopback. The output transport and the network to
the user add their own path on top (a SmallWebRTC transport queues about one audio chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
from importlib import resources
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avatar_pipecat import AvatarVideoService, NodeAddress  # noqa: E402
from pipecat.frames.frames import InterruptionFrame, OutputImageRawFrame, TTSAudioRawFrame  # noqa: E402

from avatar_node.server import NodeConfig, start_background_node  # noqa: E402
from tests.pipecat.conftest import _synthesize  # noqa: E402
from tests.pipecat.harness import AvatarPipeline, Speech  # noqa: E402
from tests.pipecat.test_in_process import speaking_bar  # noqa: E402

W, H, FPS = 640, 360, 25.0


def first_picture(run: AvatarPipeline, after: float, speaking: bool) -> float:
    """When the first picture pushed after `after` that shows (or not) speech left the service."""
    for at, frame in list(run.down.seen):
        if at > after and isinstance(frame, OutputImageRawFrame):
            width, height = frame.size
            picture = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
            if speaking_bar(picture) == speaking:
                return at
    return math.nan


async def arrival(run: AvatarPipeline, seen: int, kind: type) -> float:
    """When the first frame of `kind` after the first `seen` reached the service."""
    async with asyncio.timeout(30):
        while True:
            found = [t for t, f in run.into.seen[seen:] if isinstance(f, kind)]
            if found:
                return found[0]
            await asyncio.sleep(0.01)


async def shown(run: AvatarPipeline, after: float, speaking: bool) -> float:
    async with asyncio.timeout(30):
        while math.isnan(first_picture(run, after, speaking)):
            await asyncio.sleep(0.01)
    return first_picture(run, after, speaking) - after


async def measure(avatar: AvatarVideoService, speech: Speech, runs: int) -> tuple[list[float], list[float]]:
    to_face: list[float] = []
    to_idle: list[float] = []
    async with AvatarPipeline(avatar) as run:
        await run.until(lambda: len(run.frames()) >= 25)
        for turn in range(runs):
            seen = len(run.into.seen)
            await run.say(speech, context_id=f"bench-{turn}")
            to_face.append(await shown(run, await arrival(run, seen, TTSAudioRawFrame), True))
            await asyncio.sleep(1.0)
            seen = len(run.into.seen)
            await run.queue(InterruptionFrame())
            to_idle.append(await shown(run, await arrival(run, seen, InterruptionFrame), False))
            await asyncio.sleep(0.5)
        await run.end()
    return to_face, to_idle


def report(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(f"  {name:<22} median {statistics.median(ms):6.0f} ms   min {min(ms):5.0f}   max {max(ms):5.0f}   "
          f"(n={len(ms)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["in-process", "node", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    photo = resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()
    speech = _synthesize("This sentence is long enough to be interrupted in the middle of it, every time.")
    options = dict(photo=photo, engine="testcard", width=W, height=H, fps=FPS)
    if args.mode in ("in-process", "both"):
        face, idle = await measure(AvatarVideoService(**options), speech, args.runs)  # type: ignore[arg-type]
        print("in-process (the engine in the agent's process):")
        report("TTS audio -> face", face)
        report("interruption -> idle", idle)
    if args.mode in ("node", "both"):
        with start_background_node(NodeConfig(port=0, engines=["testcard"], text_to_speech=False)) as node:
            avatar = AvatarVideoService(node=NodeAddress(node.target), **options)  # type: ignore[arg-type]
            face, idle = await measure(avatar, speech, args.runs)
        print("node mode (the service -> a node over gRPC on loopback -> the service):")
        report("TTS audio -> face", face)
        report("interruption -> idle", idle)


if __name__ == "__main__":
    asyncio.run(main())
