"""Session slots come back on every path: normal end, cancels at any moment, clients killed outright."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys

import grpc
import pytest

from avatar_proto import avatar_pb2 as pb

from ..support.node_process import NodeProcess
from .conftest import Call, channel, start_event, wait_for_active

KILLED_CLIENT = r"""
import sys, grpc
from importlib import resources
from avatar_proto import avatar_pb2 as pb, avatar_pb2_grpc as pb_grpc
photo = resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()
def requests():
    yield pb.ClientEvent(start=pb.StartSession(image=photo, output=pb.OutputFormat(width=320, height=240)))
    yield pb.ClientEvent(text=pb.SpeakText(text="I am about to be killed while I speak this sentence."))
    import time
    time.sleep(3600)
stub = pb_grpc.AvatarNodeStub(grpc.insecure_channel(sys.argv[1]))
for event in stub.Converse(requests()):
    if event.WhichOneof("event") == "video":
        print("video", flush=True)
"""


async def _render_and_hang_up(target: str, photo: bytes) -> None:
    """A render call read up to `ended`, then cancelled at once (what a CLI does as it exits)."""
    async with channel(target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, live=False))
        call.send(text=pb.SpeakText(text="Hi."))
        call.send(end=pb.EndSession())
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "ended")
        call.call.cancel()  # type: ignore[attr-defined]


async def _cancelled_at(target: str, photo: bytes, moment: str, rng: random.Random) -> None:
    async with channel(target) as stub:
        call = Call(stub)
        call.send(**start_event(photo))
        call.send(text=pb.SpeakText(text="Some words to be cut off somewhere in the middle of them."))
        call.open()
        try:
            if moment == "start":
                await asyncio.sleep(rng.uniform(0.0, 0.15))
            elif moment == "turn":
                await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.speaking)
                await asyncio.sleep(rng.uniform(0.0, 0.3))
            else:  # while closing
                await call.read_until(lambda e: e.WhichOneof("event") == "video")
                call.send(end=pb.EndSession(discard_pending=True))
                call.close()
                await asyncio.sleep(rng.uniform(0.0, 0.05))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc  # the node was full for a moment
        call.call.cancel()  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_two_hundred_calls_leave_no_session_behind(photo):
    node = NodeProcess("--max-sessions", "6")
    rng = random.Random(7)
    try:
        for _ in range(80):
            await _render_and_hang_up(node.target, photo)
        assert await wait_for_active(node.target, 0) == 0, "sequential calls leaked slots"

        moments = [rng.choice(("start", "turn", "close")) for _ in range(100)]
        for wave in range(0, 100, 5):
            await asyncio.gather(*(_cancelled_at(node.target, photo, m, rng) for m in moments[wave : wave + 5]))
        assert await wait_for_active(node.target, 0) == 0, "cancelled calls leaked slots"

        for wave in range(4):
            clients = [
                subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, node.target], stdout=subprocess.PIPE, text=True)
                for _ in range(5)
            ]
            for client in clients:  # each is killed at a random moment of its session
                assert client.stdout is not None
                if rng.random() < 0.7:
                    client.stdout.readline()
                await asyncio.sleep(rng.uniform(0.0, 0.4))
                client.send_signal(signal.SIGKILL)
            for client in clients:
                client.wait(10)
        # A killed client's connection is noticed by the OS at once (RST): slots return quickly.
        assert await wait_for_active(node.target, 0, within=2.0) == 0, "killed clients leaked slots"

        await _render_and_hang_up(node.target, photo)  # and the node still serves
        assert await wait_for_active(node.target, 0) == 0
    finally:
        assert node.terminate() == 0
    node.assert_clean_log()
