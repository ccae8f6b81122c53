"""What users of a node get, measured from a client over real gRPC, the node in its own process.

    python benchmarks/node_bench.py [--photo PHOTO] [--levels 8,10,12,14] [--trials 3] [--seconds 8]

Prints, for the default engine and an 848x480 output:
- first frame: start of a live session (prepared avatar) -> its first video frame, median of 5;
- speech chunk -> mouth: speech streamed at exactly real time in 20 ms chunks; for each chunk, the
  time from sending it to receiving the frame whose audio holds its first sample (p50, p90), and
  the silent frames inserted mid-speech (should be 0). Target: <= 80 ms + the engine's look-ahead;
- live capacity: N live sessions, each streaming speech at real time in 100 ms chunks (the SDK's
  default), for several trials per N. A level holds when, in every trial, every session got
  >= 98 % of its frames, none dropped or repeated, no silence inserted, and no frame left the node
  more than 100 ms late. The spread over trials is printed, and what the node's own admission
  control would accept (GetNodeInfo's live capacity) beside it.

The photo defaults to a tight crop of the bundled portrait, so the face fills the frame (the
dearest case for the portrait engine). A video given as --photo makes a clip avatar (the node
tells a video by its bytes): the same figures for clip avatars. The node runs with admission control opened up
(--live-load-target 2) so that the measurement, not the admission estimate, decides.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from avatar_node.speech.tts import SpeechSynthesizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from avatar_proto import avatar_pb2 as pb
from avatar_proto import avatar_pb2_grpc as pb_grpc
from portrait_bench import face_filling_photo  # noqa: E402

SENTENCE = ("Hello there. I am a talking avatar, rendered live on this machine, one frame at a time, "
            "and I can keep talking for as long as you like.")
FPS = 25
TICKS = 48000 // FPS


class Node:
    def __init__(self, max_sessions: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avatar_node.cli", "serve", "--port", "0", "--max-sessions", str(max_sessions),
             "--live-load-target", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready on" not in line:
            raise SystemExit(f"the node did not start: {line}")
        self.target = line.split("ready on ")[1].split()[0]
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@dataclass
class Session:
    stub: pb_grpc.AvatarNodeStub
    avatar_id: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)  # type: ignore[type-arg]
    arrivals: dict[int, float] = field(default_factory=dict)  # pts -> arrival
    turn_start: int | None = None
    stats: pb.SessionStats | None = None
    frames: int = 0
    first_frame_at: float | None = None

    def start(self) -> None:
        self.queue.put_nowait(pb.ClientEvent(start=pb.StartSession(avatar_id=self.avatar_id, stats_interval_ms=0)))
        self.call = self.stub.Converse(self._requests())
        self.reader = asyncio.create_task(self._read())

    async def _requests(self):  # type: ignore[no-untyped-def]
        while (event := await self.queue.get()) is not None:
            yield event

    def send(self, **event) -> None:  # type: ignore[no-untyped-def]
        self.queue.put_nowait(pb.ClientEvent(**event))

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for event in self.call:
            kind = event.WhichOneof("event")
            if kind == "video":
                self.frames += 1
                self.arrivals[event.video.pts] = loop.time()
                if self.first_frame_at is None:
                    self.first_frame_at = loop.time()
            elif kind == "turn" and event.turn.kind == pb.TurnEvent.KIND_STARTED and self.turn_start is None:
                self.turn_start = event.turn.pts
            elif kind == "stats":
                self.stats = event.stats

    async def stream_speech(self, speech: np.ndarray, rate: int, chunk_ms: int, seconds: float) -> list[tuple[float, int]]:
        """Send speech at exactly real time for `seconds`; returns (send time, sample position) per chunk."""
        loop = asyncio.get_running_loop()
        chunk = rate * chunk_ms // 1000
        sent: list[tuple[float, int]] = []
        t0, position = loop.time(), 0
        while position / rate < seconds:
            piece = speech[position % len(speech) :][:chunk]
            if len(piece) < chunk:
                piece = np.concatenate([piece, speech[: chunk - len(piece)]])
            await asyncio.sleep(max(0.0, t0 + position / rate - loop.time()))
            sent.append((loop.time(), position))
            self.send(speech_audio=pb.SpeechAudio(pcm=piece.tobytes(), sample_rate=rate))
            position += chunk
        self.send(speech_audio=pb.SpeechAudio(sample_rate=rate, end_of_turn=True))
        return sent

    async def finish(self) -> None:
        self.send(end=pb.EndSession(discard_pending=True))
        self.queue.put_nowait(None)
        await asyncio.wait_for(self.reader, 30)


async def first_frame(stub: pb_grpc.AvatarNodeStub, avatar_id: str) -> float:
    session = Session(stub, avatar_id)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    session.start()
    while session.first_frame_at is None:
        await asyncio.sleep(0.002)
    took = session.first_frame_at - t0
    await session.finish()
    return took


async def mouth_latency(stub: pb_grpc.AvatarNodeStub, avatar_id: str, speech: np.ndarray, rate: int) -> tuple[list[float], int]:
    session = Session(stub, avatar_id)
    session.start()
    await asyncio.sleep(1.0)
    sent = await session.stream_speech(speech, rate, 20, float(os.environ.get("MOUTH_S", "8")))
    await asyncio.sleep(0.5)
    await session.finish()
    assert session.turn_start is not None and session.stats is not None
    latencies = []
    for when, position in sent:
        pts = session.turn_start + position * 48000 // rate
        frame_pts = pts - pts % TICKS
        if frame_pts in session.arrivals:
            latencies.append(session.arrivals[frame_pts] - when)
    return latencies, session.stats.speech_underruns


async def capacity_trial(stub: pb_grpc.AvatarNodeStub, avatar_id: str, n: int, speech: np.ndarray, rate: int,
                         seconds: float) -> list[tuple[float, pb.SessionStats]]:
    sessions = [Session(stub, avatar_id) for _ in range(n)]
    for s in sessions:
        s.start()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    counted = [s.frames for s in sessions]
    t0 = loop.time()
    await asyncio.gather(*(s.stream_speech(speech, rate, 100, seconds) for s in sessions))
    elapsed = loop.time() - t0
    rates = [(s.frames - c) / elapsed / FPS for s, c in zip(sessions, counted)]
    await asyncio.gather(*(s.finish() for s in sessions))
    return [(r, s.stats) for r, s in zip(rates, sessions)]  # type: ignore[misc]


def _holds(results: list[tuple[float, pb.SessionStats]]) -> bool:
    return all(r >= 0.98 and st.frames_dropped == 0 and st.frames_skipped == 0 and st.speech_underruns == 0
               and st.max_lag_ms <= 100 for r, st in results)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, help="default: a tight crop of the bundled portrait")
    parser.add_argument("--levels", default="8,10,12,14", help="live sessions to try, comma-separated")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="streaming time per capacity trial")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    photo = args.photo.read_bytes() if args.photo else face_filling_photo()
    with SpeechSynthesizer() as synth:
        clip = synth.synthesize(SENTENCE)
    speech, rate = np.asarray(clip.samples), clip.sample_rate
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")

    node = Node(max(levels) + 2)
    try:
        async with grpc.aio.insecure_channel(node.target) as channel:
            stub = pb_grpc.AvatarNodeStub(channel)
            avatar_id = (await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=photo))).avatar_id
            info = await stub.GetNodeInfo(pb.GetNodeInfoRequest())
            lookahead = info.engines[0].audio_lookahead_ms

            firsts = [await first_frame(stub, avatar_id) for _ in range(5)]
            print(f"first frame after start: median {statistics.median(firsts) * 1000:.0f} ms "
                  f"(min {min(firsts) * 1000:.0f}, max {max(firsts) * 1000:.0f})")

            latencies, underruns = await mouth_latency(stub, avatar_id, speech, rate)
            ms = np.array(latencies) * 1000
            print(f"speech chunk -> mouth (20 ms chunks at 1x): p50 {np.percentile(ms, 50):.0f} ms, "
                  f"p90 {np.percentile(ms, 90):.0f} ms; target <= {80 + lookahead} ms (80 + look-ahead "
                  f"{lookahead}); silent frames inserted: {underruns}")

            info = await stub.GetNodeInfo(pb.GetNodeInfoRequest())
            print(f"admission control's estimate: {info.engines[0].live_capacity} live sessions "
                  f"(at the default load target 0.85; this node runs with 2 for the measurement)")
            held = 0
            for n in levels:
                trials = [await capacity_trial(stub, avatar_id, n, speech, rate, args.seconds)
                          for _ in range(args.trials)]
                ok = [_holds(t) for t in trials]
                worst_rate = [min(r for r, _ in t) for t in trials]
                worst_lag = [max(st.max_lag_ms for _, st in t) for t in trials]
                skipped = [sum(st.frames_skipped for _, st in t) for t in trials]
                print(f"{n:3d} live sessions: held in {sum(ok)}/{len(ok)} trials; slowest session "
                      f"{min(worst_rate):.1%}..{max(worst_rate):.1%} of 25 fps; worst lag "
                      f"{min(worst_lag):.0f}..{max(worst_lag):.0f} ms; repeated frames "
                      f"{min(skipped)}..{max(skipped)}")
                if all(ok):
                    held = n
            print(f"live capacity measured: {held} sessions at 25 fps (every trial held)")
    finally:
        node.stop()


if __name__ == "__main__":
    asyncio.run(main())
