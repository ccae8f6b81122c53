"""A real node on loopback with the default engine, and helpers to drive raw Converse calls."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from importlib import resources
from typing import AsyncIterator

import grpc
import numpy as np
import pytest

from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb
from avatar_proto import avatar_pb2_grpc as pb_grpc


@pytest.fixture(scope="session")
def photo() -> bytes:
    return resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()


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


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    # A voiced-like signal: a harmonic tone with a syllable-rate envelope.
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    signal = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, 6))
    return (signal * envelope * amp * 32767 / 2).astype(np.int16)


class NodeProcess:
    """`avatar-node serve` in a process of its own: real signals, a real log, its own CPU time."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "avatar_node.cli", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        ready = threading.Event()

        def pump(pipe, lines, watch):  # type: ignore[no-untyped-def]
            for line in pipe:
                lines.append(line)
                if watch and "ready on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.proc.stdout, self.stdout, True), daemon=True).start()
        threading.Thread(target=pump, args=(self.proc.stderr, self.stderr, False), daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            raise RuntimeError(f"node did not start: {''.join(self.stdout + self.stderr)}")
        line = next(line for line in self.stdout if "ready on" in line)
        self.target = line.split("ready on ")[1].split()[0]

    def terminate(self, timeout: float = 30.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    @property
    def log(self) -> str:
        return "".join(self.stderr)

    def assert_clean_log(self) -> None:
        bad = [line for line in self.stderr if any(w in line for w in ("Traceback", "ERROR", "Task was destroyed",
                                                                          "Exception", "exception"))]
        assert not bad, "".join(self.stderr[-60:])


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
