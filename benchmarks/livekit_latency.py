"""LiveKit plugin latency, from what a subscriber would see (tracks read back, pixels measured).

    python benchmarks/livekit_latency.py [--mode local|node|both] [--runs 5]

- speech -> face: from the agent handing its first audio frame of a reply to the avatar's
  audio output, to the first published video frame that shows that speech;
- speech -> voice: from the same moment to the first published audio that carries it (a
  subscriber hears the reply then; face and voice should arrive together);
- clear_buffer -> idle: from the agent's interrupt reaching the output, to the first published
  frame that shows no speech;
- voice dropouts: runs of exact silence under 0.5 s cut into the published speech (the audio
  source ran dry; an interrupt's silence is longer).

Uses the test-card engine (its level bar shows each frame's speech exactly), 640x360 at
25 fps, rooms linked in process (no LiveKit server), and for node mode a real node over gRPC
on loopback. A real server adds its network path on top.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.livekit.conftest import RATE, Readback, Speech, _synthesize, abrupt_gaps  # noqa: E402
from tests.livekit.test_local_mode import local_avatar  # noqa: E402
from tests.livekit.test_node_mode import node_avatar  # noqa: E402

from avatar_node.server import NodeConfig, start_background_node  # noqa: E402

SPEAKING = 0.02
VOICED = 300  # int16 peak: the synthesized voice, not the silence between replies


def first_frame(readback: Readback, after: float, speaking: bool) -> float:
    for t, image in list(readback.video):
        if t > after:
            from avatar_node.engines.testcard import bar_level

            if (bar_level(image) > SPEAKING) == speaking:
                return t
    return float("nan")


def first_voice(readback: Readback, after: float) -> float:
    for t, samples in list(readback.audio):
        if t > after and len(samples) and int(np.abs(samples).max()) > VOICED:
            return t
    return float("nan")


async def measure(run, speech, runs: int, realtime: bool) -> tuple[list[float], list[float], list[float]]:
    to_face, to_voice, to_idle = [], [], []
    output = run.session.output.audio
    captured: list[float] = []
    capture = output.capture_frame

    async def spy_capture(frame):
        if not captured:
            captured.append(time.monotonic())
        await capture(frame)

    output.capture_frame = spy_capture
    await asyncio.sleep(1.0)
    for _ in range(runs):
        captured.clear()
        handle = run.session.say("benchmark", audio=speech.frames(realtime=realtime))
        while not captured:
            await asyncio.sleep(0.005)
        await asyncio.sleep(1.5)
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 5)
        await asyncio.sleep(0.8)
        to_face.append(first_frame(run.readback, captured[0], True) - captured[0])
        to_voice.append(first_voice(run.readback, captured[0]) - captured[0])
        cleared = run.clears[-1]
        to_idle.append(first_frame(run.readback, cleared, False) - cleared)
    return to_face, to_voice, to_idle


def report(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(f"  {name:<22} median {statistics.median(ms):6.0f} ms   min {min(ms):5.0f}   max {max(ms):5.0f}   (n={len(ms)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["local", "node", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--realtime-tts", action="store_true",
                        help="the agent's speech arrives at 1x (a streaming TTS), not all at once")
    args = parser.parse_args()
    from importlib import resources

    photo = resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()
    speech = _synthesize("This sentence is long enough to be interrupted in the middle of it, every time.")
    # espeak's pauses are exact silence: a faint hiss there, so exact silence in the published
    # voice is a dropout.
    hiss = np.random.default_rng(1).normal(0, 30, len(speech.samples)).astype(np.int16)
    speech = Speech(np.where(speech.samples == 0, hiss, speech.samples), speech.rate)
    if args.mode in ("local", "both"):
        async with local_avatar(photo, engine="testcard", width=640, height=360) as run:
            face, voice, idle = await measure(run, speech, args.runs, args.realtime_tts)
        print("local mode (engine in the agent's process):")
        report("speech -> face", face)
        report("speech -> voice", voice)
        report("clear_buffer -> idle", idle)
        print(f"  voice dropouts         {abrupt_gaps(run.readback.audio_samples(), loud=0, longest=RATE // 2)}")
    if args.mode in ("node", "both"):
        with start_background_node(NodeConfig(port=0, engines=["testcard"], text_to_speech=False)) as node:
            async with node_avatar(node, photo) as run:
                face, voice, idle = await measure(run, speech, args.runs, args.realtime_tts)
        print("node mode (agent -> data streams -> worker -> node over gRPC -> worker):")
        report("speech -> face", face)
        report("speech -> voice", voice)
        report("clear_buffer -> idle", idle)
        print(f"  voice dropouts         {abrupt_gaps(run.readback.audio_samples(), loud=0, longest=RATE // 2)}")


if __name__ == "__main__":
    asyncio.run(main())
