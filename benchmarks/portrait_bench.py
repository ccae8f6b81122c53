"""Cost of the portrait engine on this machine: identity preparation and per-frame work.

    python benchmarks/portrait_bench.py [PHOTO] [--frames 250]

Prints prepare time, render time per 848x480 frame (p50, p95), render + H.264 encode
(libx264 ultrafast, zerolatency) on one thread, and how many frames per second one core
makes: the number of live 25 fps sessions a core carries is that divided by 25.
"""

from __future__ import annotations

import argparse
import os
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from avatar_node.engines.base import StreamOptions  # noqa: E402
from avatar_node.engines.portrait import PortraitEngine  # noqa: E402
from avatar_node.engines.portrait.drive import frame_conditions, resample_to_speech_rate  # noqa: E402
from avatar_node.speech.tts import SpeechSynthesizer  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "avatar_node" / "assets" / "sample_portrait.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--frames", type=int, default=250)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core: what one session costs

    engine = PortraitEngine()
    photo = args.photo.read_bytes()
    engine.prepare(photo)  # loads the models once
    t0 = time.perf_counter()
    identity = engine.prepare(photo)
    prepare_ms = (time.perf_counter() - t0) * 1e3

    with SpeechSynthesizer() as tts:
        clip = tts.synthesize("The quick brown fox jumps over the lazy dog, and then it rests for a while.")
    speech = resample_to_speech_rate(clip.samples, clip.sample_rate)
    options = StreamOptions(width=848, height=480, fps=25, seed=1)
    conds = list(frame_conditions(args.frames, options.fps, engine.info.audio_lookahead_ms, speech=speech))

    t0 = time.perf_counter()
    stream = engine.open(identity, options)
    open_ms = (time.perf_counter() - t0) * 1e3
    render = []
    frames = []
    for cond in conds:
        t0 = time.perf_counter()
        frames.append(stream.step(cond)[0])
        render.append(time.perf_counter() - t0)
    stream.close()

    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 848, 480, "yuv420p"
    codec.time_base = Fraction(1, 25)
    codec.framerate = Fraction(25, 1)
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
    stream = engine.open(identity, options)
    both = []
    for cond in conds:
        t0 = time.perf_counter()
        frame = stream.step(cond)[0]
        codec.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))
        both.append(time.perf_counter() - t0)
    stream.close()

    r = np.array(render) * 1e3
    b = np.array(both) * 1e3
    print(f"photo: {args.photo.name} ({identity.image_width}x{identity.image_height}), faces found: {identity.faces_found}")
    print(f"prepare: {prepare_ms:.0f} ms   open (rig build): {open_ms:.0f} ms")
    print(f"render 848x480:           p50 {np.percentile(r, 50):.2f} ms   p95 {np.percentile(r, 95):.2f} ms")
    print(f"render + encode (1 thr):  p50 {np.percentile(b, 50):.2f} ms   p95 {np.percentile(b, 95):.2f} ms")
    fps = 1000.0 / float(np.mean(b))
    print(f"one core: {fps:.0f} frames/s = {fps / 25:.1f} live sessions at 25 fps")


if __name__ == "__main__":
    main()
