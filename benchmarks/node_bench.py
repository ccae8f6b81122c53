"""Node figures over the real gRPC path on loopback, with the default engine.

    python benchmarks/node_bench.py [--photo PHOTO] [--max-sessions 8] [--seconds 6]

Prints:
- first frame after start, for a prepared avatar (live session, median of 5);
- speech in -> first frame showing it (live, idle session, a whole utterance sent at once; median of 5),
  next to the engine's declared audio look-ahead;
- how many live 848x480 sessions, all speaking at once, hold 25 fps with no dropped frame
  (frames received >= 98% of the media time, no frame dropped, final lag under one frame).
Per-frame render + encode cost on one core: benchmarks/portrait_bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from importlib import resources
from pathlib import Path

import grpc

from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb
from avatar_proto import avatar_pb2_grpc as pb_grpc

SENTENCE = "Hello there. I am a talking avatar, rendered live on this machine, one frame at a time."


class Live:
    """One live session driven by a queue of client events."""

    def __init__(self, stub: pb_grpc.AvatarNodeStub, avatar_id: str) -> None:
        self.queue: asyncio.Queue[pb.ClientEvent | None] = asyncio.Queue()
        self.queue.put_nowait(
            pb.ClientEvent(
                start=pb.StartSession(avatar_id=avatar_id, mode=pb.SESSION_MODE_LIVE, stats_interval_ms=0)
            )
        )
        self.call = stub.Converse(self._requests())

    async def _requests(self):  # type: ignore[no-untyped-def]
        while (event := await self.queue.get()) is not None:
            yield event

    def send(self, **kw) -> None:  # type: ignore[no-untyped-def]
        self.queue.put_nowait(pb.ClientEvent(**kw))

    async def next_video(self, predicate=lambda v: True) -> pb.VideoPacket:  # type: ignore[no-untyped-def]
        while True:
            event = await self.call.read()
            if event is grpc.aio.EOF:
                raise RuntimeError("session ended early")
            if event.WhichOneof("event") == "video" and predicate(event.video):
                return event.video

    async def finish(self) -> tuple[int, pb.SessionStats]:
        self.send(end=pb.EndSession(discard_pending=True))
        self.queue.put_nowait(None)
        frames, stats = 0, pb.SessionStats()
        while (event := await self.call.read()) is not grpc.aio.EOF:
            kind = event.WhichOneof("event")
            frames += kind == "video"
            if kind == "stats":
                stats = event.stats
        return frames, stats


async def first_frame_ms(stub: pb_grpc.AvatarNodeStub, avatar_id: str) -> float:
    t = time.perf_counter()
    live = Live(stub, avatar_id)
    await live.next_video()
    ms = (time.perf_counter() - t) * 1000
    await live.finish()
    return ms


async def speech_to_frame_ms(stub: pb_grpc.AvatarNodeStub, avatar_id: str, pcm: bytes) -> float:
    live = Live(stub, avatar_id)
    first = await live.next_video()
    await live.next_video(lambda v: v.frame_index >= first.frame_index + 12)  # settle into idle
    t = time.perf_counter()
    live.send(speech_audio=pb.SpeechAudio(pcm=pcm, sample_rate=16000, end_of_turn=True))
    await live.next_video(lambda v: v.speaking)
    ms = (time.perf_counter() - t) * 1000
    await live.finish()
    return ms


async def sessions_hold(stub: pb_grpc.AvatarNodeStub, avatar_id: str, n: int, seconds: float) -> tuple[bool, str]:
    lives = [Live(stub, avatar_id) for _ in range(n)]
    for live in lives:
        live.send(text=pb.SpeakText(text=" ".join([SENTENCE] * 3)))
    await asyncio.gather(*(live.next_video() for live in lives))
    t = time.perf_counter()

    async def drain(live: Live) -> int:
        count = 0
        while time.perf_counter() - t < seconds:
            await live.next_video()
            count += 1
        return count

    counts = await asyncio.gather(*(drain(live) for live in lives))
    results = await asyncio.gather(*(live.finish() for live in lives))
    expected = seconds * 25
    dropped = sum(stats.frames_dropped for _, stats in results)
    lag = max(stats.lag_ms for _, stats in results)
    ok = min(counts) >= 0.98 * expected - 1 and dropped == 0 and lag < 40
    return ok, f"min {min(counts)}/{expected:.0f} frames, dropped {dropped}, lag {lag:.0f} ms"


async def main_async(args: argparse.Namespace) -> None:
    from avatar_node.speech.tts import SpeechSynthesizer
    from avatar_node.media.audio import StreamResampler

    photo = Path(args.photo).read_bytes() if args.photo else (
        resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()
    )
    clip = SpeechSynthesizer().synthesize("Yes, of course.")
    resampler = StreamResampler(clip.sample_rate, 16000)
    import numpy as np

    pcm = np.concatenate([resampler.process(clip.samples), resampler.flush()]).tobytes()

    node = start_background_node(NodeConfig(port=0, max_sessions=args.max_sessions))
    try:
        async with grpc.aio.insecure_channel(node.target) as channel:
            stub = pb_grpc.AvatarNodeStub(channel)
            info = await stub.GetNodeInfo(pb.GetNodeInfoRequest())
            engine = info.engines[0]
            prepared = await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=photo))
            print(f"engine {engine.name}: look-ahead {engine.audio_lookahead_ms} ms; prepare {prepared.prepare_ms:.0f} ms")
            firsts = [await first_frame_ms(stub, prepared.avatar_id) for _ in range(5)]
            print(f"first frame after start (prepared avatar): median {statistics.median(firsts):.1f} ms "
                  f"(min {min(firsts):.1f}, max {max(firsts):.1f})")
            lat = [await speech_to_frame_ms(stub, prepared.avatar_id, pcm) for _ in range(5)]
            print(f"speech in -> first speaking frame: median {statistics.median(lat):.1f} ms "
                  f"(min {min(lat):.1f}, max {max(lat):.1f}); target <= 80 + {engine.audio_lookahead_ms} ms")
            best = 0
            for n in range(1, args.max_sessions + 1):
                ok, detail = await sessions_hold(stub, prepared.avatar_id, n, args.seconds)
                print(f"{n} live sessions at 848x480@25: {'hold' if ok else 'FAIL'} ({detail})")
                if not ok:
                    break
                best = n
            print(f"live sessions holding 25 fps with no dropped frame: {best}")
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo")
    parser.add_argument("--max-sessions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
