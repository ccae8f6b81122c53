"""The livetalk engine end to end: first-frame latency, generated fps, real-time sessions per
GPU and memory per session.

Runs the whole engine (wav2vec2 on real synthesised speech, prompt, 4 denoising passes +
cache pass, cached VAE decode, compositing onto a 848x480 canvas) from a prepared avatar.

    python benchmarks/livetalk_bench.py --tiny                 # CPU smoke run, tiny random weights
    python benchmarks/livetalk_bench.py                        # full size, random weights, CUDA
    python benchmarks/livetalk_bench.py --weights DIR          # a real weights directory
    python benchmarks/livetalk_bench.py --full-cpu-smoke       # one full-size block on the CPU, stage by stage
    python benchmarks/livetalk_bench.py --features-table [--weights DIR]
        # live wav2vec2 features vs whole-clip ones by how much of the turn has arrived, for a
        # sliding window and for the engine's rule (random wav2vec2-base without DIR)

Figures:
- first frame: open a stream and run its first block (9 frames) from a prepared avatar;
- generated fps: one session in steady state (window full), 12 frames per block step;
- real-time sessions: the engine's own capacity probe (batched block steps that fit in
  80% of the 0.75 s a block lasts), then checked by running that many sessions batched;
- memory per session: GPU memory held by one more open session after its window filled
  (KV cache, VAE decode state), on CPU the KV cache and decode state sizes.

Needs the [diffusion] extra. With random weights the pictures are noise; the timings are
those of the real network shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avatar_node.engines.base import Conditioning, StreamOptions
from avatar_node.engines.livetalk.engine import LiveTalkEngine, LiveTalkStream
from avatar_node.engines.livetalk.tiny import (
    make_full_size_random_weights,
    make_tiny_weights,
)

PORTRAIT = Path(__file__).resolve().parents[1] / "avatar_node" / "assets" / "sample_portrait.jpg"
BLOCK_SECONDS = 0.75


def speech_16k(seconds: float) -> np.ndarray:
    from avatar_node.media.audio import StreamResampler, to_float32
    from avatar_node.speech.tts import SpeechSynthesizer

    text = "This is a benchmark of a talking avatar. It speaks for a while so every block has real speech. " * 8
    with SpeechSynthesizer() as tts:
        clip = tts.synthesize(text)
    resampler = StreamResampler(clip.sample_rate, 16_000, np.float32)
    audio = np.concatenate([resampler.process(to_float32(clip.samples)), resampler.flush()])
    reps = int(np.ceil(seconds * 16_000 / len(audio)))
    return np.tile(audio, reps)


class Driver:
    """Feeds one stream the node's way: consecutive steps of speech plus the look-ahead."""

    def __init__(self, engine: LiveTalkEngine, stream: LiveTalkStream, audio: np.ndarray) -> None:
        self.engine, self.stream, self.audio, self.index = engine, stream, audio, 0

    def next_cond(self) -> Conditioning:
        frames = self.stream.next_step_frames()
        span = frames * 1000 + self.engine.info.audio_lookahead_ms * 16
        start = (self.index * 1000) % (len(self.audio) - span)
        cond = Conditioning(
            speech=self.audio[start : start + span], speaking=[True] * frames, listen=np.zeros(span, np.float32), frame_index=self.index
        )
        self.index += frames
        return cond


def sync(engine: LiveTalkEngine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random weights (CPU smoke run)")
    parser.add_argument("--weights", type=Path, help="a weights directory (default: random weights in a temp dir)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--blocks", type=int, default=8, help="timed steady-state blocks")
    parser.add_argument("--compile", action="store_true", help="torch.compile the dense parts of the DiT")
    parser.add_argument("--max-sessions", type=int, default=8, help="most sessions the capacity probe tries")
    parser.add_argument(
        "--vae", choices=("full", "tiny"), default="full", help="video decoder: the Wan2.1 VAE or the tiny taew2_1.pth"
    )
    parser.add_argument("--features-table", action="store_true", help="only measure streamed vs whole-clip audio features")
    parser.add_argument(
        "--full-cpu-smoke",
        action="store_true",
        help="one full-size block end to end on the CPU, random weights (many minutes, ~13 GB)",
    )
    args = parser.parse_args()
    if args.full_cpu_smoke:
        return full_cpu_smoke()
    if args.features_table:
        return features_table(args.weights)

    device = "cpu" if args.tiny and args.device == "auto" else args.device
    if not args.tiny and args.weights is None and not torch.cuda.is_available() and device != "cpu":
        print("no CUDA device: run with --tiny for the CPU smoke run, or --device cpu to time full size (very slow)", file=sys.stderr)
        return 2
    if args.tiny:
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="livetalk-bench-") as tmp:
        started = time.perf_counter()
        if args.weights is not None:
            root = args.weights
        elif args.tiny:
            root = make_tiny_weights(Path(tmp) / "w")
        else:
            root = make_full_size_random_weights(Path(tmp) / "w", device="cuda" if torch.cuda.is_available() else "cpu")
        written = time.perf_counter() - started
        started = time.perf_counter()
        engine = LiveTalkEngine(root, device=device, compile=args.compile, measure_capacity=False, vae=args.vae)
        loaded = time.perf_counter() - started
        return run(engine, args, written, loaded)


def features_table(weights: Path | None) -> int:
    from avatar_node.engines.livetalk.audio_features import (
        Wav2VecEncoder,
        arrival_difference_table,
        format_arrival_table,
    )
    from avatar_node.engines.livetalk.weights import find_wav2vec_dir

    if weights is not None:
        encoder = Wav2VecEncoder(find_wav2vec_dir(weights))
        what = f"wav2vec2 from {find_wav2vec_dir(weights)}"
    else:
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        torch.manual_seed(0)
        encoder = Wav2VecEncoder.from_model(Wav2Vec2Model(Wav2Vec2Config()))
        what = "wav2vec2-base shapes with RANDOM weights (pass --weights DIR for the real table)"
    audio = speech_16k(1.0)[: 16_000 * 10]
    rows = arrival_difference_table(encoder, audio)
    print(f"features of a {len(audio) / 16000:.1f} s turn of espeak speech played step by step, against the "
          f"whole clip's; {what}; look-ahead 4 frames (250 ms), sliding window 48 frames of past")
    print(format_arrival_table(rows))
    return 0


def run(engine: LiveTalkEngine, args: argparse.Namespace, written: float, loaded: float) -> int:
    cuda = engine.device.type == "cuda"
    name = torch.cuda.get_device_name(engine.device) if cuda else "cpu"
    cfg = engine.cfg
    print(f"device: {name}  dtype: {str(engine.dtype).removeprefix('torch.')}  torch {torch.__version__}")
    print(f"model: DiT {cfg.dit.num_layers} layers x {cfg.dit.dim}, video {cfg.video_width}x{cfg.video_height}, "
          f"{(cfg.latent_size[0] // 2) * (cfg.latent_size[1] // 2)} tokens per latent frame; look-ahead {engine.info.audio_lookahead_ms} ms")
    print(f"weights written in {written:.1f} s, engine loaded in {loaded:.1f} s")
    audio = speech_16k(60.0)

    t = time.perf_counter()
    identity = engine.prepare(PORTRAIT.read_bytes())
    print(f"prepare (face crop + VAE encode): {1000 * (time.perf_counter() - t):.0f} ms")

    options = StreamOptions(width=848, height=480, fps=16, seed=0)
    # Warm the kernels once (first calls compile / autotune), then time a fresh session.
    warm = engine.open(identity, options)
    warm.step(Driver(engine, warm, audio).next_cond())
    warm.close()
    sync(engine)

    t = time.perf_counter()
    stream = engine.open(identity, options)
    driver = Driver(engine, stream, audio)
    first = stream.step(driver.next_cond())
    sync(engine)
    first_s = time.perf_counter() - t
    print(f"first frame: {1000 * first_s:.0f} ms (open + first block of {len(first)} frames; target <= 300 ms on a GPU)")

    for _ in range(5):  # fill the attention window
        stream.step(driver.next_cond())
    sync(engine)
    times = []
    for _ in range(args.blocks):
        t = time.perf_counter()
        stream.step(driver.next_cond())
        sync(engine)
        times.append(time.perf_counter() - t)
    block_s = statistics.median(times)
    fps = 12 / block_s
    print(f"one session: block step median {1000 * block_s:.0f} ms (min {1000 * min(times):.0f}); "
          f"generated {fps:.1f} fps = {fps / 16:.2f}x real time (target >= 32 fps)")

    session_bytes = stream.session.cache.nbytes + stream.decoder.nbytes
    if cuda:
        before = torch.cuda.memory_allocated(engine.device)
        extra = engine.open(identity, options)
        extra_driver = Driver(engine, extra, audio)
        for _ in range(6):
            extra.step(extra_driver.next_cond())
        sync(engine)
        held = torch.cuda.memory_allocated(engine.device) - before
        extra.close()
        print(f"memory per session: {held / 2**30:.2f} GiB on the GPU "
              f"(KV cache {stream.session.cache.nbytes / 2**30:.2f} GiB, decode state {stream.decoder.nbytes / 2**20:.0f} MiB)")
    else:
        print(f"memory per session: KV cache {stream.session.cache.nbytes / 2**20:.2f} MiB + decode state "
              f"{stream.decoder.nbytes / 2**20:.2f} MiB = {session_bytes / 2**20:.2f} MiB")
    stream.close()

    capacity = engine.measure_capacity(most=args.max_sessions)
    streams = [engine.open(identity, StreamOptions(width=848, height=480, fps=16, seed=i)) for i in range(capacity)]
    drivers = [Driver(engine, s, audio) for s in streams]
    for _ in range(6):
        engine.step_batch(streams, [d.next_cond() for d in drivers])
    sync(engine)
    times = []
    for _ in range(max(3, args.blocks // 2)):
        t = time.perf_counter()
        engine.step_batch(streams, [d.next_cond() for d in drivers])
        sync(engine)
        times.append(time.perf_counter() - t)
    batch_s = statistics.median(times)
    for s in streams:
        s.close()
    verdict = "keeps 1x" if batch_s <= BLOCK_SECONDS else "falls behind 1x"
    print(f"real-time sessions: {capacity} (probe); {capacity} batched: block step {1000 * batch_s:.0f} ms "
          f"for {BLOCK_SECONDS * 1000:.0f} ms of video each -> {verdict}; "
          f"{12 * capacity / batch_s:.1f} generated fps in all (target >= 2 sessions per H100)")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(engine.device) / 2**30:.2f} GiB")
    engine.close()
    return 0


def _peak_rss_gib(who: int = 0) -> float:
    import resource

    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(who or resource.RUSAGE_SELF).ru_maxrss / 2**20


def full_cpu_smoke() -> int:
    """One full-size block through every stage on the CPU, to catch what only the real shapes hit
    (the GPU path is timed elsewhere). The weights are written in a child process so the peak
    resident set printed afterwards is the engine's own, not the writer's."""
    import multiprocessing
    import resource

    from avatar_node.media.encoder import H264Encoder

    stages: list[tuple[str, float, str]] = []

    def stage(name: str, seconds: float, shape: str, peak: float | None = None) -> None:
        stages.append((name, seconds, shape))
        peak = _peak_rss_gib() if peak is None else peak
        print(f"{name:<34} {seconds:8.2f} s   {shape:<44} peak RSS {peak:5.2f} GiB", flush=True)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 on the CPU", flush=True)
    with tempfile.TemporaryDirectory(prefix="livetalk-smoke-") as tmp:
        t = time.perf_counter()
        writer = multiprocessing.get_context("spawn").Process(
            target=make_full_size_random_weights, args=(Path(tmp) / "w",), kwargs={"device": "cpu"}
        )
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            print(f"writing the random weights failed (exit code {writer.exitcode})", file=sys.stderr)
            return 1
        root = Path(tmp) / "w"
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        stage("write random weights (child)", time.perf_counter() - t, f"{size / 2**30:.2f} GiB on disk")
        print(f"{'':<34} child peak RSS {_peak_rss_gib(resource.RUSAGE_CHILDREN):.2f} GiB", flush=True)

        t = time.perf_counter()
        engine = LiveTalkEngine(root, device="cpu", measure_capacity=False)
        params = sum(p.numel() for p in engine.dit.parameters())
        stage("load engine", time.perf_counter() - t, f"DiT {params / 1e9:.2f} B params, {engine.dtype}")

        t = time.perf_counter()
        identity = engine.prepare(PORTRAIT.read_bytes())
        ref = identity.data.reference  # type: ignore[union-attr]
        stage("prepare (face crop + VAE encode)", time.perf_counter() - t, f"reference latent {list(ref.shape)}")

        t = time.perf_counter()
        stream = engine.open(identity, StreamOptions(width=848, height=480, fps=16, seed=0))
        stage("open 848x480", time.perf_counter() - t, f"KV cache {stream.session.cache.nbytes / 2**20:.0f} MiB")

        audio = speech_16k(2.0)
        cond = Driver(engine, stream, audio).next_cond()
        t = time.perf_counter()
        plan = stream.plan_block(cond)
        took = time.perf_counter() - t
        stage("speech features (wav2vec2)", took, f"{len(cond.speech)} samples -> {list(plan.audio.shape)}")

        decoded: list[torch.Tensor] = []
        decode_s: list[float] = []
        peaks: list[float] = []  # the decode runs inside the step (before the cache pass): peaks on either side

        def decode(clean: torch.Tensor) -> None:
            peaks.append(_peak_rss_gib())
            started = time.perf_counter()
            decoded.append(stream.decode_block(clean))
            decode_s.append(time.perf_counter() - started)
            peaks.append(_peak_rss_gib())

        t = time.perf_counter()
        clean = engine.sampler.step(
            [stream.session],
            plan.audio[None].to(engine.device),
            first_frames=[plan.first_latent],
            prompts=[plan.prompt],
            on_clean=decode,
        )
        total = time.perf_counter() - t
        stage("DiT: 4 passes + cache pass", total - decode_s[0], f"clean latents {list(clean.shape)}", peaks[0])
        stage("VAE decode (cached)", decode_s[0], f"frames {list(decoded[0].shape)} uint8", peaks[1])
        print(f"{'':<34} peak RSS after the cache pass {_peak_rss_gib():.2f} GiB", flush=True)

        t = time.perf_counter()
        frames = stream.compose_frames(decoded[0])
        stage("composite onto the canvas", time.perf_counter() - t, f"{len(frames)} x {list(frames[0].shape)}")

        encoder = H264Encoder(848, 480, 16.0)
        t = time.perf_counter()
        units = [encoder.encode(frame) for frame in frames]
        encoder.close()
        took = time.perf_counter() - t
        size = sum(len(u.data) for u in units)
        stage(f"H.264 encode ({encoder.codec_name})", took, f"{len(units)} access units, {size} bytes")
        stream.close()
        engine.close()
    block = sum(s for _, s, _ in stages[4:])
    print(f"block total (features .. encode): {block:.1f} s; peak RSS {_peak_rss_gib():.2f} GiB "
          f"(weights writer {_peak_rss_gib(resource.RUSAGE_CHILDREN):.2f} GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
