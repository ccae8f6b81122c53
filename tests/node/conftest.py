"""A real node on loopback with the default engine, and helpers to drive raw Converse calls."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator

import grpc
import pytest

from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb
from avatar_proto import avatar_pb2_grpc as pb_grpc

from ..support.media import tone as tone  # the node tests import it from here
from ..support.node_process import NodeProcess, kill_leftovers


@pytest.fixture(scope="session")
def node():
    with start_background_node(NodeConfig(port=0, max_sessions=6)) as running:
        yield running


@dataclass
class Call:
    """One Converse call: a queue of events to send and everything received."""

    stub: pb_grpc.AvatarNodeStub
    outgoing: asyncio.Queue = field(default_factory=asyncio.Queue)
    received: list[pb.ServerEvent] = field(default_factory=list)
    call: object = None

    async def _requests(self) -> AsyncIterator[pb.ClientEvent]:
        while True:
            event = await self.outgoing.get()
            if event is None:
                return
            yield event

    def send(self, **event) -> None:  # type: ignore[no-untyped-def]
        self.outgoing.put_nowait(pb.ClientEvent(**event))

    def close(self) -> None:
        self.outgoing.put_nowait(None)

    def open(self, metadata=None):  # type: ignore[no-untyped-def]
        self.call = self.stub.Converse(self._requests(), metadata=metadata)
        return self.call

    async def read_until(self, predicate, timeout: float = 30.0) -> pb.ServerEvent:  # type: ignore[no-untyped-def]
        async def loop() -> pb.ServerEvent:
            while True:
                event = await self.call.read()  # type: ignore[attr-defined]
                if event is grpc.aio.EOF:
                    raise AssertionError("stream ended before the expected event")
                self.received.append(event)
                if predicate(event):
                    return event

        return await asyncio.wait_for(loop(), timeout)

    async def read_all(self, timeout: float = 60.0) -> list[pb.ServerEvent]:
        async def loop() -> None:
            while True:
                event = await self.call.read()  # type: ignore[attr-defined]
                if event is grpc.aio.EOF:
                    return
                self.received.append(event)

        await asyncio.wait_for(loop(), timeout)
        return self.received

    def of(self, kind: str) -> list:  # type: ignore[type-arg]
        return [getattr(e, kind) for e in self.received if e.WhichOneof("event") == kind]


@contextlib.asynccontextmanager
async def channel(target: str):  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as ch:
        yield pb_grpc.AvatarNodeStub(ch)


def start_event(photo: bytes, live: bool = True, width: int = 320, height: int = 240, **kw) -> dict:  # type: ignore[no-untyped-def]
    return dict(
        start=pb.StartSession(
            image=photo,
            mode=pb.SESSION_MODE_LIVE if live else pb.SESSION_MODE_RENDER,
            output=pb.OutputFormat(width=width, height=height, fps=25),
            **kw,
        )
    )


@pytest.fixture(scope="session", autouse=True)
def _no_node_left_behind():
    """Whatever a test did, no node process outlives the test run."""
    yield
    kill_leftovers()


@pytest.fixture(scope="module")
def node_process():
    node = NodeProcess("--max-sessions", "6")
    yield node
    assert node.terminate() == 0
    node.assert_clean_log()


async def active_sessions(target: str) -> int:
    async with channel(target) as stub:
        return (await stub.GetNodeInfo(pb.GetNodeInfoRequest())).active_sessions


async def wait_for_active(target: str, expected: int, within: float = 1.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        now = await active_sessions(target)
        if now == expected or loop.time() > deadline:
            return now
        await asyncio.sleep(0.05)


@dataclass
class WitnessReport:
    frames: int
    seconds: float
    max_gap_s: float
    stats: pb.SessionStats | None
    own_stall_s: float = 0.0  # the longest the test's own event loop was held up meanwhile


@contextlib.asynccontextmanager
async def live_witness(target: str, photo: bytes, min_seconds: float = 1.5):  # type: ignore[no-untyped-def]
    """A live session, speaking the whole time, that must keep 1x while the test misbehaves next to it.

    On exit it checks: no frame missing or dropped, about 25 frames a second, the node's own lag
    figures under the 250 ms bound, and no gap between arrivals above 400 ms plus however long
    the test's own event loop was held up (it is busy misbehaving: a stall it causes itself
    delays its reading, not the node)."""
    loop = asyncio.get_running_loop()
    report = WitnessReport(0, 0.0, 0.0, None)
    async with channel(target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, stats_interval_ms=0))
        call.send(speech_audio=pb.SpeechAudio(pcm=tone(60.0).tobytes(), sample_rate=16000, end_of_turn=True))
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "video")
        arrivals: list[float] = []

        async def watch() -> None:
            while True:
                event = await call.call.read()  # type: ignore[attr-defined]
                if event is grpc.aio.EOF:
                    return
                call.received.append(event)
                if event.WhichOneof("event") == "video":
                    arrivals.append(loop.time())

        async def heartbeat() -> None:
            while True:
                before = loop.time()
                await asyncio.sleep(0.01)
                report.own_stall_s = max(report.own_stall_s, loop.time() - before - 0.01)

        watcher = asyncio.create_task(watch())
        beating = asyncio.create_task(heartbeat())
        try:
            started = loop.time()
            yield report
            await asyncio.sleep(max(0.0, min_seconds - (loop.time() - started)))
            call.send(end=pb.EndSession(discard_pending=True))
            call.close()
            await asyncio.wait_for(watcher, 30)
        finally:  # a failing test must not leave either task behind
            beating.cancel()
            watcher.cancel()
    report.seconds = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    report.frames = len(arrivals)
    report.max_gap_s = max((b - a for a, b in zip(arrivals, arrivals[1:])), default=0.0)
    report.stats = call.of("stats")[-1]
    print(f"witness: {report.frames} frames in {report.seconds:.2f} s, max gap {report.max_gap_s * 1000:.0f} ms, "
          f"max lag {report.stats.max_lag_ms:.0f} ms, skipped {report.stats.frames_skipped}, "
          f"the test's own loop held up {report.own_stall_s * 1000:.0f} ms at most")
    videos = call.of("video")
    indices = [v.frame_index for v in videos]
    assert indices == list(range(indices[0], indices[0] + len(indices))), "witness frames went missing"
    assert report.stats.frames_dropped == 0, "witness frames dropped"
    fps = (report.frames - 1) / report.seconds
    assert fps >= 24.0, f"witness ran at {fps:.1f} fps"
    assert report.max_gap_s < 0.4 + report.own_stall_s, (
        f"witness stalled for {report.max_gap_s * 1000:.0f} ms (the test's own loop: "
        f"{report.own_stall_s * 1000:.0f} ms at most)")
    assert report.stats.max_lag_ms < 250, f"witness lag {report.stats.max_lag_ms:.0f} ms"


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
