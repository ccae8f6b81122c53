"""One-shot device check of the livetalk engine: is the CUDA path right, and how fast is it?

    python benchmarks/gpu_check.py            # one H100/H200, under 8 minutes, nothing downloaded
    python benchmarks/gpu_check.py --json     # the same figures as JSON on stdout (table on stderr)
    python benchmarks/gpu_check.py --dry-run  # CPU, tiny weights, every phase shortened (CI)

Phases, in order of what matters most, each skipped ("skipped: time budget") when the time
left cannot hold it, and a watchdog that prints what was measured and exits before the
budget is overrun whatever a phase does:
- parity: the same blocks of the same session (same photo, speech and noise) on CPU fp32 and
  on the device in fp32 and bf16, tiny random weights: clean latents and decoded frames;
- full size, random weights written here (on the GPU, the fastest way): first frame, one
  session's generated fps and block time p50/p99, memory per session, decode on the side
  CUDA stream against no overlap (and that both give the same frames), the engine's
  capacity probe and that many sessions batched, NVENC and libx264 per frame, the VAE
  decoders (full and, where the engine has it, tiny);
- two live sessions over gRPC on loopback through an in-process node, fed real-time speech;
- torch.compile on against off.
In --dry-run the device is the CPU, so fp32 parity is CPU against itself (trivially equal)
and bf16 parity is CPU bf16 against CPU fp32: the point there is that the code runs.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts from here: imports are part of the start-up

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatar_node.engines.base import StreamOptions  # noqa: E402
from avatar_node.engines.livetalk.engine import LiveTalkEngine, LiveTalkStream  # noqa: E402
from avatar_node.engines.livetalk.tiny import make_full_size_random_weights, make_tiny_weights  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from livetalk_bench import PORTRAIT, Driver, speech_16k, sync  # noqa: E402

#: Keyword options this version of the engine takes (the tiny VAE decoder is optional).
ENGINE_OPTIONS = frozenset(inspect.signature(LiveTalkEngine).parameters)
BLOCK_S = 0.75  # video one block step yields (12 frames at 16 fps)
WIDTH, HEIGHT, FPS = 848, 480, 16

# Tolerances of the parity rows (device against CPU fp32, tiny weights, 2 blocks).
# fp32 (TF32 off): only the order of float32 reductions differs, ~1e-7 relative per op; grown
# through 6 layers x 5 passes x 2 blocks it stays near 1e-5 on latents of magnitude ~1. A wrong
# index, a race between CUDA streams or a dtype slip moves latents by 0.1..1, so 1e-3 separates
# the two by two orders of magnitude; frames are uint8 after rounding, so a level or two may flip.
# bf16: 8 bits of mantissa (~0.4 % per rounding). CPU bf16 against CPU fp32 on these weights
# measured max 0.076 / mean 0.0075 on latents (mean |latent| 0.74) and max 10 / mean 1.1 levels on
# frames; the tolerances are about 4x that, still far below what a real bug does (mean errors of
# the order of the signal itself).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"latent_max": 1e-3, "latent_mean": 1e-4, "frame_max": 2.0, "frame_mean": 0.05},
    "bf16": {"latent_max": 0.3, "latent_mean": 0.03, "frame_max": 40.0, "frame_mean": 4.0},
}

#: Every row the report has, in order: (key, what is checked).
ROWS: tuple[tuple[str, str], ...] = (
    ("device", "device"),
    ("parity_fp32", "CUDA vs CPU parity, fp32"),
    ("parity_bf16", "CUDA vs CPU parity, bf16"),
    ("weights", "random full-size weights"),
    ("engine_load", "engine load"),
    ("first_frame", "first frame (open + first block)"),
    ("generated_fps", "generated fps, one session"),
    ("block_time", "block step, one session"),
    ("memory_per_session", "memory per session"),
    ("decode_overlap", "VAE decode overlapped with cache pass"),
    ("capacity", "capacity probe, batched"),
    ("nvenc", "H.264 encode per 848x480 frame"),
    ("vae_decode", "VAE decode per block, full vs tiny"),
    ("live_sessions", "2 live gRPC sessions"),
    ("compile", "torch.compile on vs off"),
)


@dataclass
class Plan:
    """How long each phase runs: the device check, or the CPU dry run's shortened version."""

    dry_run: bool
    device: str
    dtype: torch.dtype
    budget_s: float  # phases start only while this much of the run is left
    hard_s: float  # the watchdog's limit: report and exit
    parity_blocks: int = 2
    steady_blocks: int = 40
    overlap_blocks: int = 12
    capacity_most: int = 12
    batched_blocks: int = 5
    encode_frames: int = 96
    decode_blocks: int = 6
    live_seconds: float = 60.0
    compile_blocks: int = 12
    #: Seconds each phase needs at most; it is skipped when less is left.
    needs: dict[str, float] = field(default_factory=dict)

    @classmethod
    def for_gpu(cls) -> Plan:
        return cls(
            dry_run=False,
            device="cuda",
            dtype=torch.bfloat16,
            budget_s=450.0,
            hard_s=470.0,
            needs={
                "parity": 40,
                "weights": 60,
                "engine_load": 40,
                "one_session": 60,
                "memory": 20,
                "overlap": 45,
                "capacity": 90,
                "encoders": 15,
                "vae": 45,
                "live": 130,
                "compile": 110,
            },
        )

    @classmethod
    def for_dry_run(cls) -> Plan:
        return cls(
            dry_run=True,
            device="cpu",
            dtype=torch.float32,
            budget_s=100.0,
            hard_s=110.0,
            steady_blocks=4,
            overlap_blocks=2,
            capacity_most=2,
            batched_blocks=2,
            encode_frames=16,
            decode_blocks=2,
            live_seconds=2.0,
            needs={},
        )


@dataclass
class Row:
    key: str
    check: str
    result: str = ""
    target: str = ""
    status: str = "skipped"  # pass, FAIL, info, n/a, skipped
    figures: dict[str, Any] = field(default_factory=dict)


class Report:
    """The rows, filled as phases finish; printed once, by the run or by the watchdog."""

    def __init__(self, plan: Plan, as_json: bool) -> None:
        self.plan = plan
        self.as_json = as_json
        self.rows = {key: Row(key, check, result="skipped: time budget") for key, check in ROWS}
        self.done: set[str] = set()
        self.running: tuple[str, ...] = ()
        self._printed = threading.Lock()
        self.header: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.monotonic() - STARTED

    def left(self) -> float:
        return self.plan.budget_s - self.elapsed()

    def set(self, key: str, result: str, status: str, target: str = "", **figures: Any) -> None:
        row = self.rows[key]
        row.result, row.status, row.target, row.figures = result, status, target, figures
        self.done.add(key)

    def finish(self) -> int:
        """Print the report (once); the exit code is 1 when a row failed."""
        if not self._printed.acquire(blocking=False):
            return 0
        for key in self.running:
            if key not in self.done:
                self.rows[key].result = "skipped: time budget (cut off while running)"
        failed = any(r.status == "FAIL" for r in self.rows.values())
        table = format_table(self.header, list(self.rows.values()), self.elapsed())
        if self.as_json:
            print(table, file=sys.stderr, flush=True)
            data = {
                **self.header,
                "dry_run": self.plan.dry_run,
                "elapsed_s": round(self.elapsed(), 1),
                "rows": [vars(r) for r in self.rows.values()],
            }
            print(json.dumps(data, indent=1, default=str), flush=True)
        else:
            print(table, flush=True)
        return 1 if failed else 0


def format_table(header: dict[str, Any], rows: list[Row], elapsed: float) -> str:
    widths = [max(len(r.check) for r in rows), 7, max(len(r.target) for r in rows)]
    lines = [
        f"livetalk device check: {header.get('device_name', '?')}, torch {header.get('torch')}, "
        f"CUDA {header.get('cuda') or 'none'}; {'DRY RUN (CPU, tiny weights)' if header.get('dry_run') else 'full run'}"
        f"; {elapsed:.0f} s",
        "  ".join(h.ljust(w) for h, w in zip(("check", "status", "target / tolerance", "result"), widths)),
        "  ".join("-" * w for w in widths) + "  " + "-" * 40,
    ]
    for r in rows:
        lines.append(
            "  ".join((r.check.ljust(widths[0]), r.status.ljust(widths[1]), r.target.ljust(widths[2]), r.result))
        )
    return "\n".join(lines)


# -- helpers ------------------------------------------------------------------------------------


class Check:
    """What the phases share: the plan, the report, the weights and the engine under test."""

    def __init__(self, plan: Plan, report: Report, workdir: Path) -> None:
        self.plan, self.report, self.workdir = plan, report, workdir
        self.photo = PORTRAIT.read_bytes()
        self.audio = speech_16k(70.0 if not plan.dry_run else 8.0)
        self.tiny_root: Path | None = None
        self.root: Path | None = None  # the weights the size phases use
        self.engine: LiveTalkEngine | None = None
        self.block_p50_s: float | None = None
        self.sample_frames: list[np.ndarray] = []
        self.nvenc = False

    @property
    def cuda(self) -> bool:
        return self.plan.device == "cuda"

    def tiny_weights(self) -> Path:
        if self.tiny_root is None:
            self.tiny_root = make_tiny_weights(self.workdir / "tiny")
        return self.tiny_root

    def options(self, seed: int = 0) -> StreamOptions:
        return StreamOptions(width=WIDTH, height=HEIGHT, fps=FPS, seed=seed)

    def free_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def speed_verdict(self, ok: bool) -> str:
        """Pass/FAIL for a speed target; the CPU dry run only reports (a shared CPU cannot hold a GPU's pace)."""
        return "info" if self.plan.dry_run else "pass" if ok else "FAIL"

    def new_engine(self, **options: Any) -> LiveTalkEngine:
        """An engine on the plan's device and dtype, with the full VAE unless told otherwise."""
        assert self.root is not None
        if "vae" in ENGINE_OPTIONS:
            options.setdefault("vae", "full")
        else:
            options.pop("vae", None)
        return LiveTalkEngine(
            self.root, device=self.plan.device, dtype=self.plan.dtype, measure_capacity=False, **options
        )


def timed_blocks(
    engine: LiveTalkEngine,
    streams: list[LiveTalkStream],
    drivers: list[Driver],
    blocks: int,
    keep: list[list[np.ndarray]] | None = None,
) -> list[float]:
    """Seconds of each of `blocks` batched block steps (device synchronised)."""
    times = []
    for _ in range(blocks):
        conds = [d.next_cond() for d in drivers]
        started = time.perf_counter()
        out = engine.step_batch(streams, conds)
        sync(engine)
        times.append(time.perf_counter() - started)
        if keep is not None:
            keep.append([f for frames in out for f in frames])
    return times


def fill_window(
    engine: LiveTalkEngine,
    streams: list[LiveTalkStream],
    drivers: list[Driver],
    keep: list[list[np.ndarray]] | None = None,
) -> None:
    """Run blocks until every stream attends to a full window (sinks + previous block + itself)."""
    cfg = engine.stream_cfg
    timed_blocks(engine, streams, drivers, cfg.window_frames // cfg.frames_per_block + 1, keep)


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms"


@contextlib.contextmanager
def captured_log(name: str) -> Iterator[list[str]]:
    """Messages a module logs at INFO or above while the block runs."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger(name), Keep(logging.INFO)
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


# -- phases -------------------------------------------------------------------------------------


def phase_device(c: Check) -> None:
    if c.cuda:
        props = torch.cuda.get_device_properties(0)
        name = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})"
    else:
        name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    cudnn = torch.backends.cudnn.version() if c.cuda else None
    c.report.header.update(
        device_name=name, torch=torch.__version__, cuda=torch.version.cuda, cudnn=cudnn, dry_run=c.plan.dry_run
    )
    c.report.set(
        "device",
        f"{name}; torch {torch.__version__}; CUDA {torch.version.cuda or 'none'}; cuDNN {cudnn or 'none'}",
        "info",
        device=name,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=cudnn,
    )


def _parity_run(c: Check, root: Path, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean latents [16, T, h, w] and decoded frames [N, H, W, 3] (uint8 as float) of the first
    blocks of one session. The noise is drawn on the CPU, so every device denoises the same."""
    full_vae: dict[str, Any] = {"vae": "full"} if "vae" in ENGINE_OPTIONS else {}
    engine = LiveTalkEngine(root, device=device, dtype=dtype, measure_capacity=False, **full_vae)
    stream = engine.open(engine.prepare(c.photo), StreamOptions(width=320, height=240, fps=FPS, seed=0))
    driver = Driver(engine, stream, c.audio)
    g = torch.Generator().manual_seed(1234)
    cfg, per_block = engine.stream_cfg, engine.stream_cfg.frames_per_block
    latents: list[torch.Tensor] = []
    decoded: list[torch.Tensor] = []  # one entry per block, appended before its cache pass
    for _ in range(c.plan.parity_blocks):
        plan = stream.plan_block(driver.next_cond())
        shape = (1, cfg.num_steps, engine.cfg.dit.latent_channels, per_block, *engine.cfg.latent_size)
        clean = engine.sampler.step(
            [stream.session],
            plan.audio[None].to(engine.device),
            torch.randn(shape, generator=g),
            first_frames=[plan.first_latent],
            prompts=[plan.prompt],
            on_clean=lambda x: decoded.append(stream.decode_block(x)),
        )
        latents.append(clean[0].float().cpu())
    stream.close()
    engine.close()
    return torch.cat(latents, dim=1), torch.cat([f.float().cpu() for f in decoded])


def phase_parity(c: Check) -> None:
    root = c.tiny_weights()
    ref_latents, ref_frames = _parity_run(c, root, "cpu", torch.float32)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        # TF32 convolutions would make fp32 parity a bf16-like comparison; the engine's fp32 is exact fp32.
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        if name == "fp32":
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            latents, frames = _parity_run(c, root, c.plan.device, dtype)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        dl, df = (latents - ref_latents).abs(), (frames - ref_frames).abs()
        got = {
            "latent_max": dl.max().item(),
            "latent_mean": dl.mean().item(),
            "frame_max": df.max().item(),
            "frame_mean": df.mean().item(),
        }
        tol = TOLERANCES[name]
        ok = all(got[k] <= tol[k] for k in tol)
        other = f"{c.plan.device} {name}"
        c.report.set(
            f"parity_{name}",
            f"{other} vs cpu fp32, {c.plan.parity_blocks} blocks: latents max {got['latent_max']:.2e} mean "
            f"{got['latent_mean']:.1e}; frames max {got['frame_max']:.0f} mean {got['frame_mean']:.2f}",
            "pass" if ok else "FAIL",
            f"lat {tol['latent_max']:g}/{tol['latent_mean']:g}, frm {tol['frame_max']:g}/{tol['frame_mean']:g}",
            **got,
            tolerances=tol,
            blocks=c.plan.parity_blocks,
            compared=f"{other} vs cpu float32",
        )


def phase_weights(c: Check) -> None:
    started = time.perf_counter()
    if c.plan.dry_run:
        c.root = c.tiny_weights()
        what = "dry run: tiny weights instead"
    else:
        c.root = make_full_size_random_weights(c.workdir / "full", device="cuda")
        what = "written on the GPU"
    took = time.perf_counter() - started
    size = sum(f.stat().st_size for f in c.root.rglob("*") if f.is_file())
    c.report.set("weights", f"{size / 2**30:.2f} GiB in {took:.1f} s ({what})", "info", seconds=took, bytes=size)


def phase_engine_load(c: Check) -> None:
    assert c.root is not None
    started = time.perf_counter()
    c.engine = c.new_engine()
    took = time.perf_counter() - started
    cfg = c.engine.cfg
    c.report.set(
        "engine_load",
        f"{took:.1f} s; DiT {cfg.dit.num_layers}x{cfg.dit.dim}, video {cfg.video_width}x{cfg.video_height}, "
        f"{str(c.engine.dtype).removeprefix('torch.')}",
        "info",
        seconds=took,
        dtype=str(c.engine.dtype),
    )


def phase_one_session(c: Check) -> None:
    engine = c.engine
    assert engine is not None
    identity = engine.prepare(c.photo)
    warm = engine.open(identity, c.options())  # first calls pick kernels and allocate
    warm.step(Driver(engine, warm, c.audio).next_cond())
    warm.close()
    c.sync()

    started = time.perf_counter()
    stream = engine.open(identity, c.options())
    driver = Driver(engine, stream, c.audio)
    first = stream.step(driver.next_cond())
    c.sync()
    first_s = time.perf_counter() - started
    c.report.set(
        "first_frame",
        f"{ms(first_s)} ({len(first)} frames in the first block)",
        "info",
        "<= 300 ms (GPU)",
        ms=1000 * first_s,
        frames=len(first),
    )

    keep: list[list[np.ndarray]] = []
    fill_window(engine, [stream], [driver], keep)
    c.sample_frames = keep[-1]
    times = timed_blocks(engine, [stream], [driver], c.plan.steady_blocks)
    p50, p99 = float(np.percentile(times, 50)), float(np.percentile(times, 99))
    c.block_p50_s = p50
    fps = 12 / p50
    c.report.set(
        "generated_fps",
        f"{fps:.1f} fps = {fps / FPS:.2f}x real time (12 frames / block p50)",
        "info",
        ">= 32 fps (2x)",
        fps=fps,
        realtime_factor=fps / FPS,
    )
    c.report.set(
        "block_time",
        f"p50 {ms(p50)}, p99 {ms(p99)}, max {ms(max(times))} over {len(times)} blocks (window full)",
        "info",
        f"<= {ms(BLOCK_S)}",
        p50_ms=1000 * p50,
        p99_ms=1000 * p99,
        max_ms=1000 * max(times),
        blocks=len(times),
    )
    stream.close()


def phase_memory(c: Check) -> None:
    engine = c.engine
    assert engine is not None
    identity = engine.prepare(c.photo)
    if c.cuda:
        gc.collect()
        before = torch.cuda.memory_allocated()
    stream = engine.open(identity, c.options())
    driver = Driver(engine, stream, c.audio)
    fill_window(engine, [stream], [driver])
    kv, state = stream.session.cache.nbytes, stream.decoder.nbytes
    if c.cuda:
        held = torch.cuda.memory_allocated() - before
        c.report.set(
            "memory_per_session",
            f"{held / 2**30:.2f} GiB on the GPU (KV cache {kv / 2**30:.2f} GiB, "
            f"decode state {state / 2**20:.0f} MiB); peak so far {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
            "info",
            gib=held / 2**30,
            kv_bytes=kv,
            decode_state_bytes=state,
            peak_gib=torch.cuda.max_memory_allocated() / 2**30,
        )
    else:
        c.report.set(
            "memory_per_session",
            f"CPU: KV cache {kv / 2**20:.2f} MiB + decode state {state / 2**20:.2f} MiB",
            "info",
            kv_bytes=kv,
            decode_state_bytes=state,
        )
    stream.close()


def phase_overlap(c: Check) -> None:
    """The same session twice (same seed, so the same noise): decode on the side stream, then
    not. Equal frames show the side stream has no race; the time difference is the gain."""
    engine = c.engine
    assert engine is not None
    identity = engine.prepare(c.photo)
    results: dict[bool, tuple[list[float], list[list[np.ndarray]]]] = {}
    try:
        for overlap in (True, False):
            engine.overlap_decode = overlap
            stream = engine.open(identity, c.options(seed=7))
            driver = Driver(engine, stream, c.audio)
            frames: list[list[np.ndarray]] = []
            fill_window(engine, [stream], [driver], frames)
            times = timed_blocks(engine, [stream], [driver], c.plan.overlap_blocks, frames)
            results[overlap] = (times, frames)
            stream.close()
    finally:
        engine.overlap_decode = True
    on, off = (float(np.median(results[k][0])) for k in (True, False))
    a = np.stack([f for block in results[True][1] for f in block]).astype(np.int16)
    b = np.stack([f for block in results[False][1] for f in block]).astype(np.int16)
    diff = np.abs(a - b)
    same = diff.max() <= 8 and diff.mean() <= 0.05  # a race corrupts whole regions, not a level or two
    note = "" if c.cuda else " (CPU: no side stream, both are one path)"
    c.report.set(
        "decode_overlap",
        f"block p50 on {ms(on)}, off {ms(off)}: saves {ms(off - on)}; frames equal (max diff {diff.max()}){note}"
        if same
        else f"frames DIFFER on/off: max {diff.max()}, mean {diff.mean():.3f}; p50 on {ms(on)}, off {ms(off)}",
        "pass" if same else "FAIL",
        "same frames on/off",
        on_ms=1000 * on,
        off_ms=1000 * off,
        frame_max_diff=int(diff.max()),
        frame_mean_diff=float(diff.mean()),
    )


def phase_capacity(c: Check) -> None:
    engine = c.engine
    assert engine is not None
    with captured_log("avatar_node.engines.livetalk.engine") as probe_log:
        capacity = engine.measure_capacity(most=c.plan.capacity_most)
    probes = [m for m in probe_log if "capacity probe" in m]
    identity = engine.prepare(c.photo)
    streams = [engine.open(identity, c.options(seed=i)) for i in range(capacity)]
    drivers = [Driver(engine, s, c.audio) for s in streams]
    fill_window(engine, streams, drivers)
    times = timed_blocks(engine, streams, drivers, c.plan.batched_blocks)
    for s in streams:
        s.close()
    step = float(np.median(times))
    keeps = step <= BLOCK_S
    c.report.set(
        "capacity",
        f"probe: {capacity} session(s); {capacity} batched: block step p50 {ms(step)} "
        f"(max {ms(max(times))}), {12 * capacity / step:.0f} generated fps in all",
        c.speed_verdict(keeps),
        f"step <= {ms(BLOCK_S)}",
        sessions=capacity,
        step_p50_ms=1000 * step,
        step_max_ms=1000 * max(times),
        probe_log=probes,
        most_tried=c.plan.capacity_most,
    )


def _encode_ms(encoder: Any, frames: list[np.ndarray], count: int) -> float:
    encoder.encode(frames[0])  # the first frame sets up the encoder
    started = time.perf_counter()
    for i in range(count):
        encoder.encode(frames[i % len(frames)])
    took = (time.perf_counter() - started) / count
    encoder.close()
    return took


def phase_encoders(c: Check) -> None:
    from avatar_node.media.encoder import H264Encoder

    frames = c.sample_frames or [np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)]
    x264 = _encode_ms(H264Encoder(WIDTH, HEIGHT, FPS), frames, c.plan.encode_frames)
    with captured_log("avatar_node.media.encoder") as why:
        hw = H264Encoder(WIDTH, HEIGHT, FPS, prefer_hardware=True)
    if hw.codec_name == "h264_nvenc":
        c.nvenc = True
        nvenc = _encode_ms(hw, frames, c.plan.encode_frames)
        c.report.set(
            "nvenc",
            f"h264_nvenc {nvenc * 1000:.2f} ms/frame; libx264 ultrafast {x264 * 1000:.2f} ms/frame "
            "(encode() incl. RGB->I420)",
            "info",
            "<= 62 ms (1 frame)",
            nvenc_ms=1000 * nvenc,
            libx264_ms=1000 * x264,
        )
    else:
        hw.close()
        reason = why[-1] if why else f"the encoder opened {hw.codec_name}"
        short = re.sub(r", \{.*?\}", "", reason).removesuffix("; encoding with libx264")  # the options are in `reason`
        c.report.set(
            "nvenc",
            f"n/a: {short[:110]}; libx264 ultrafast {x264 * 1000:.2f} ms/frame",
            "n/a",
            nvenc_ms=None,
            reason=reason,
            libx264_ms=1000 * x264,
        )


def _decode_ms(engine: LiveTalkEngine, identity: Any, blocks: int, c: Check) -> tuple[float, tuple[int, ...]]:
    """Median seconds of one cached decode of a block (3 latents -> 12 frames), after the first."""
    stream = engine.open(identity, c.options())
    g = torch.Generator().manual_seed(3)
    latent = (engine.stream_cfg.frames_per_block, *engine.cfg.latent_size)
    times: list[float] = []
    shape: tuple[int, ...] = ()
    for i in range(blocks + 1):
        clean = torch.randn((1, engine.cfg.dit.latent_channels, *latent), generator=g).to(engine.device)
        c.sync()
        started = time.perf_counter()
        video = stream.decode_block(clean)
        c.sync()
        if i:
            times.append(time.perf_counter() - started)
            shape = tuple(video.shape)
    stream.close()
    return float(np.median(times)), shape


def phase_vae(c: Check) -> None:
    engine = c.engine
    assert engine is not None and c.root is not None
    full, shape = _decode_ms(engine, engine.prepare(c.photo), c.plan.decode_blocks, c)
    figures: dict[str, Any] = {"full_ms": 1000 * full, "full_frames_shape": shape, "tiny_ms": None}
    if "vae" not in ENGINE_OPTIONS:
        tiny_text = "tiny n/a (LiveTalkEngine has no vae= option yet)"
    else:
        c.free_engine()  # the next phases load their own engines
        try:
            tiny_engine = c.new_engine(vae="tiny")
        except Exception as exc:  # the option exists but these weights lack its checkpoint, or it failed
            tiny_text = f"tiny n/a ({type(exc).__name__}: {str(exc)[:60]})"
            figures["tiny_error"] = str(exc)
        else:
            tiny, tiny_shape = _decode_ms(tiny_engine, tiny_engine.prepare(c.photo), c.plan.decode_blocks, c)
            tiny_engine.close()
            tiny_text = f"tiny {ms(tiny)} ({full / tiny:.1f}x faster), frames {list(tiny_shape)}"
            figures.update(tiny_ms=1000 * tiny, tiny_frames_shape=tiny_shape)
    c.report.set("vae_decode", f"full {ms(full)} -> frames {list(shape)}; {tiny_text}", "info", **figures)


@dataclass
class LiveResult:
    videos: list[tuple[int, int, bool, bool, float]] = field(
        default_factory=list
    )  # index, pts, repeated, speaking, arrival
    audios: list[tuple[int, int]] = field(default_factory=list)  # pts, samples
    clock: int = 48_000
    stats: Any = None


async def _live_session(stub: Any, photo: bytes, speech: np.ndarray, seconds: float) -> LiveResult:
    from avatar_proto import avatar_pb2 as pb

    queue: asyncio.Queue[Any] = asyncio.Queue()
    result = LiveResult()
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    async def requests() -> Any:
        while (event := await queue.get()) is not None:
            yield event

    queue.put_nowait(
        pb.ClientEvent(
            start=pb.StartSession(
                image=photo,
                engine="livetalk",
                mode=pb.SESSION_MODE_LIVE,
                stats_interval_ms=1000,
                output=pb.OutputFormat(width=WIDTH, height=HEIGHT, fps=FPS),
            )
        )
    )
    call = stub.Converse(requests())

    async def read() -> None:
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "ready":
                result.clock = event.ready.clock_rate
                ready.set()
            elif kind == "video":
                v = event.video
                result.videos.append((v.frame_index, v.pts, v.repeated, v.speaking, loop.time()))
            elif kind == "audio":
                result.audios.append((event.audio.pts, len(event.audio.pcm) // 2))
            elif kind == "stats":
                result.stats = event.stats

    reader = asyncio.create_task(read())
    await asyncio.wait_for(ready.wait(), 60)
    chunk = 1600  # 100 ms at 16 kHz, sent at real time
    pcm = (np.clip(speech, -1, 1) * 32767).astype(np.int16)
    t0, sent = loop.time(), 0
    while sent < seconds * 16_000:
        await asyncio.sleep(max(0.0, t0 + sent / 16_000 - loop.time()))
        piece = pcm[sent % (len(pcm) - chunk) :][:chunk]
        queue.put_nowait(pb.ClientEvent(speech_audio=pb.SpeechAudio(pcm=piece.tobytes(), sample_rate=16_000)))
        sent += chunk
    queue.put_nowait(pb.ClientEvent(speech_audio=pb.SpeechAudio(sample_rate=16_000, end_of_turn=True)))
    await asyncio.sleep(1.0)
    queue.put_nowait(pb.ClientEvent(end=pb.EndSession(discard_pending=True)))
    queue.put_nowait(None)
    await asyncio.wait_for(reader, 60)
    return result


async def _live_pair(target: str, photo: bytes, speech: np.ndarray, seconds: float) -> list[LiveResult]:
    import grpc
    from avatar_proto import avatar_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.AvatarNodeStub(channel)
        return list(await asyncio.gather(*(_live_session(stub, photo, speech, seconds) for _ in range(2))))


def judge_live(result: LiveResult, fps: float = FPS) -> dict[str, Any]:
    """On time: not a repeat, and received within one frame period of its due time, frame k
    being due (pts_k - pts_0) / clock after frame 0 arrived (the node's own schedule)."""
    if not result.videos:
        return {"frames": 0, "on_time_share": 0.0, "max_lag_ms": None, "av_match": False, "speaking": 0}
    index0, pts0, _, _, t0 = result.videos[0]
    period = 1 / fps
    lags = [arrival - (t0 + (pts - pts0) / result.clock) for _, pts, _, _, arrival in result.videos]
    on_time = sum(1 for lag, v in zip(lags, result.videos) if lag <= period and not v[2])
    ticks = round(result.clock / fps)
    video_pts = [pts for _, pts, _, _, _ in result.videos]
    av_match = (
        video_pts == [pts for pts, _ in result.audios]
        and all(pts == round(index * result.clock / fps) for index, pts, _, _, _ in result.videos)
        and all(samples == ticks for _, samples in result.audios)
    )
    stats = result.stats
    return {
        "frames": len(result.videos),
        "on_time_share": on_time / len(result.videos),
        "max_lag_ms": 1000 * max(lags),
        "repeated": sum(1 for v in result.videos if v[2]),
        "speaking": sum(1 for v in result.videos if v[3]),
        "av_match": av_match,
        "node_max_lag_ms": stats.max_lag_ms if stats is not None else None,
        "node_frames_late": stats.frames_late if stats is not None else None,
    }


def phase_live(c: Check) -> None:
    from avatar_node.server import NodeConfig, start_background_node

    assert c.root is not None
    c.free_engine()  # the node loads its own engine from the weights directory
    config = NodeConfig(
        port=0,
        engines=["livetalk"],
        weights_dir=str(c.root),
        max_sessions=4,
        hardware_encoder=c.nvenc,
        text_to_speech=False,
    )
    started = time.perf_counter()
    with start_background_node(config) as node:
        node_start = time.perf_counter() - started
        results = asyncio.run(_live_pair(node.target, c.photo, c.audio, c.plan.live_seconds))
    judged = [judge_live(r) for r in results]
    share = min(j["on_time_share"] for j in judged)
    lag = max(j["max_lag_ms"] or 0.0 for j in judged)
    av = all(j["av_match"] for j in judged)
    speaking = min(j["speaking"] for j in judged)
    status = c.speed_verdict(share >= 0.98) if av and speaking > 0 else "FAIL"
    c.report.set(
        "live_sessions",
        f"{c.plan.live_seconds:g} s x 2 ({'NVENC' if c.nvenc else 'libx264'}): on time {100 * share:.1f} %, max lag "
        f"{lag:.0f} ms, repeats {sum(j['repeated'] for j in judged)}, A/V pts {'match' if av else 'DIFFER'}; "
        f"node up in {node_start:.0f} s",
        status,
        ">= 98 % on time, pts match",
        sessions=judged,
        node_start_s=node_start,
    )


def phase_compile(c: Check) -> None:
    if not c.cuda:
        c.report.set("compile", "n/a (CPU dry run: compile skipped)", "n/a", on_ms=None, off_ms=None)
        return
    assert c.root is not None
    c.free_engine()
    started = time.perf_counter()
    engine = c.new_engine(compile=True)
    stream = engine.open(engine.prepare(c.photo), c.options())
    driver = Driver(engine, stream, c.audio)
    fill_window(engine, [stream], [driver])  # compiles on the first calls
    warm = time.perf_counter() - started
    times = timed_blocks(engine, [stream], [driver], c.plan.compile_blocks)
    stream.close()
    engine.close()
    on, off = float(np.median(times)), c.block_p50_s
    versus = f"off {ms(off)} -> {off / on:.2f}x" if off else "off not measured"
    c.report.set(
        "compile",
        f"block p50 on {ms(on)}, {versus}; load + compile + window fill {warm:.0f} s",
        "info",
        on_ms=1000 * on,
        off_ms=1000 * off if off else None,
        warmup_s=warm,
    )


PHASES: tuple[tuple[str, Callable[[Check], None], tuple[str, ...]], ...] = (
    ("device", phase_device, ("device",)),
    ("parity", phase_parity, ("parity_fp32", "parity_bf16")),
    ("weights", phase_weights, ("weights",)),
    ("engine_load", phase_engine_load, ("engine_load",)),
    ("one_session", phase_one_session, ("first_frame", "generated_fps", "block_time")),
    ("memory", phase_memory, ("memory_per_session",)),
    ("overlap", phase_overlap, ("decode_overlap",)),
    ("capacity", phase_capacity, ("capacity",)),
    ("encoders", phase_encoders, ("nvenc",)),
    ("vae", phase_vae, ("vae_decode",)),
    ("live", phase_live, ("live_sessions",)),
    ("compile", phase_compile, ("compile",)),
)
#: Phases that cannot run without the engine the earlier ones loaded.
NEEDS_ENGINE = {"one_session", "memory", "overlap", "capacity", "vae"}


def run(plan: Plan, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        check = Check(plan, report, Path(tmp))
        for name, phase, keys in PHASES:
            need = plan.needs.get(name, 0.0)
            if report.left() < need:
                for key in keys:
                    report.set(
                        key, f"skipped: time budget ({report.left():.0f} s left, needs ~{need:.0f} s)", "skipped"
                    )
                continue
            if name in NEEDS_ENGINE and check.engine is None:
                for key in keys:
                    report.set(key, "skipped: no engine (an earlier phase failed)", "skipped")
                continue
            report.running = keys
            print(f"[{report.elapsed():5.0f} s] {name} ...", file=sys.stderr, flush=True)
            try:
                phase(check)
            except Exception as exc:
                traceback.print_exc()
                for key in keys:
                    if key not in report.done:
                        report.set(key, f"error: {type(exc).__name__}: {str(exc)[:90]}", "FAIL", error=str(exc))
        check.free_engine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny weights, every phase shortened")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout (the table on stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.dry_run:
        plan = Plan.for_dry_run()
        torch.set_num_threads(1)  # tiny networks: one thread is fastest on shared cores
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run for the CPU version of this check", file=sys.stderr)
        return 2
    else:
        plan = Plan.for_gpu()
    report = Report(plan, args.json)

    def watchdog() -> None:
        time.sleep(max(0.0, plan.hard_s - report.elapsed()))
        print(f"time budget of {plan.hard_s:.0f} s reached: reporting what was measured", file=sys.stderr, flush=True)
        code = report.finish()
        os._exit(code or 3)

    threading.Thread(target=watchdog, name="budget-watchdog", daemon=True).start()
    run(plan, report)
    return report.finish()


if __name__ == "__main__":
    raise SystemExit(main())
