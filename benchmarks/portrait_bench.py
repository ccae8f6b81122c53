"""Cost of the portrait engine on this machine, as the node pays it.

    python benchmarks/portrait_bench.py [PHOTO ...] [--frames 250] [--framing auto]

For each photo (by default three made from the bundled sample: the sample itself, a
head-and-shoulders photo twice its size, and a tight face crop whose face fills the
frame) it prints prepare and open time, then per 848x480 frame at the default framing:
render time, the node's H.264 encode (avatar_node.media.encoder.H264Encoder), and both
together, as wall-clock p50/p95 and as CPU time (all threads of the process). Numeric
libraries run on one thread, as the node runs them (`limit_numeric_threads`): the
figures are one core's. The last column says how many live 25 fps sessions one core
carries at that CPU cost.

The machine may be shared: the load average is printed; compare CPU times, and re-run
before trusting a wall-clock outlier.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from avatar_node.engines.base import Conditioning, EngineStream, StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.drive import frame_conditions, resample_to_speech_rate
from avatar_node.media.encoder import H264Encoder
from avatar_node.pipeline.threads import limit_numeric_threads
from avatar_node.speech.tts import SpeechSynthesizer

SAMPLE = Path(__file__).resolve().parents[1] / "avatar_node" / "assets" / "sample_portrait.jpg"
TEXT = "The quick brown fox jumps over the lazy dog, and then it rests for a while. Would you like to hear more?"


def face_filling_photo() -> bytes:
    """The sample's face, forehead to chin and cheek to cheek (from the face mesh), enlarged to
    896x1040: the dearest case for the portrait engine."""
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    points = PortraitEngine().prepare(SAMPLE.read_bytes()).data.points
    (x0, y0), (x1, y1) = points[:, :2].min(0).astype(int), points[:, :2].max(0).astype(int)
    return _jpeg(cv2.resize(rgb[y0:y1, x0:x1], (896, 1040), interpolation=cv2.INTER_CUBIC))


def made_photos() -> list[tuple[str, bytes]]:
    """The sample, a head-and-shoulders photo twice its size, and a face-filling crop."""
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    big = cv2.resize(rgb, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    h, w = rgb.shape[:2]
    return [
        (f"sample {w}x{h}", SAMPLE.read_bytes()),
        (f"head-and-shoulders {2 * w}x{2 * h}", _jpeg(big)),
        ("face crop 896x1040 (face fills the frame)", face_filling_photo()),
    ]


def _jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=92)
    return out.getvalue()


@dataclass
class FrameTimings:
    """Seconds per frame: rendering and H.264 encoding, wall and CPU."""

    render_wall: list[float]
    render_cpu: list[float]
    encode_wall: list[float]
    encode_cpu: list[float]

    def report(self) -> None:
        def ms(values: list[float], q: float) -> float:
            return float(np.percentile(np.array(values) * 1e3, q))

        both_wall = [a + b for a, b in zip(self.render_wall, self.encode_wall)]
        cpu = float(np.mean(self.render_cpu) + np.mean(self.encode_cpu)) * 1e3
        print(f"  render          wall p50 {ms(self.render_wall, 50):5.2f} p95 {ms(self.render_wall, 95):5.2f} ms   "
              f"cpu mean {np.mean(self.render_cpu) * 1e3:5.2f} ms")
        print(f"  encode (x264)   wall p50 {ms(self.encode_wall, 50):5.2f} p95 {ms(self.encode_wall, 95):5.2f} ms   "
              f"cpu mean {np.mean(self.encode_cpu) * 1e3:5.2f} ms")
        print(f"  render+encode   wall p50 {ms(both_wall, 50):5.2f} p95 {ms(both_wall, 95):5.2f} ms   "
              f"cpu mean {cpu:5.2f} ms  -> {1000.0 / cpu / 25:.1f} live 25 fps sessions per core")


def render_and_encode(stream: EngineStream, conds: list[Conditioning], options: StreamOptions) -> FrameTimings:
    """Step `stream` through `conds` and encode each frame, timing both; closes the stream."""
    timings = FrameTimings([], [], [], [])
    encoder = H264Encoder(options.width, options.height, options.fps)
    try:
        for cond in conds:
            w0, c0 = time.perf_counter(), time.process_time()
            frame = stream.step(cond)[0]
            w1, c1 = time.perf_counter(), time.process_time()
            encoder.encode(frame)
            w2, c2 = time.perf_counter(), time.process_time()
            timings.render_wall.append(w1 - w0)
            timings.render_cpu.append(c1 - c0)
            timings.encode_wall.append(w2 - w1)
            timings.encode_cpu.append(c2 - c1)
    finally:
        stream.close()
        encoder.close()
    return timings


def measure(engine: PortraitEngine, name: str, photo: bytes, speech: np.ndarray, frames: int, framing: str) -> None:
    engine.prepare(photo)  # models loaded, caches warm
    t0 = time.perf_counter()
    identity = engine.prepare(photo)
    prepare_ms = (time.perf_counter() - t0) * 1e3
    options = StreamOptions(width=848, height=480, fps=25, seed=1, framing=framing)
    conds = list(frame_conditions(frames, options.fps, engine.info.audio_lookahead_ms, speech=speech))

    t0 = time.perf_counter()
    stream = engine.open(identity, options)
    open_ms = (time.perf_counter() - t0) * 1e3
    timings = render_and_encode(stream, conds, options)
    face = identity.face
    roi = stream.rig.roi
    print(f"\n{name}: face {face.width:.0f}x{face.height:.0f} px in the photo; warp region "
          f"{roi[2] - roi[0]}x{roi[3] - roi[1]} px; prepare {prepare_ms:.0f} ms, open {open_ms:.0f} ms")
    timings.report()

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--framing", default="auto", choices=("auto", "fit"))
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; framing {args.framing}")

    limit_numeric_threads()
    engine = PortraitEngine()
    with SpeechSynthesizer() as tts:
        clip = tts.synthesize(TEXT)
    speech = resample_to_speech_rate(clip.samples, clip.sample_rate)
    photos = [(p.name, p.read_bytes()) for p in args.photos] if args.photos else made_photos()
    for name, photo in photos:
        measure(engine, name, photo, speech, args.frames, args.framing)


if __name__ == "__main__":
    main()
