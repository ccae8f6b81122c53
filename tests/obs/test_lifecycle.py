"""Stopping, on every path (Ctrl+C, SIGTERM, task cancellation, cancelled again while cleaning up),
returns every resource: the node session, the publisher thread, the control port, the UDP lock."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from importlib import resources

import pytest

from avatar_client import AsyncAvatarClient, SessionSpec
from avatar_obs.app import AppConfig, AvatarObs, publishing_lock
from avatar_obs.publisher import udp_destination

from ..support.waits import free_port, until

PHOTO = resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()


async def active_sessions(target: str) -> int:
    async with AsyncAvatarClient(target) as client:
        return (await client.node_info()).active_sessions


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_cancelling_the_command_mid_speech_and_again_while_it_cleans_up(node):
    async def sessions_idle() -> bool:
        return await active_sessions(node.target) == 0

    await until(sessions_idle, 10, "the sessions other tests left open to close", interval=0.1)
    destination = udp_destination("127.0.0.1", free_port(socket.SOCK_DGRAM))
    control_port = free_port()
    app = AvatarObs(
        AppConfig(
            spec=SessionSpec(photo=PHOTO, width=320, height=240),
            destination=destination,
            target=node.target,
            control_port=control_port,
        )
    )
    task = asyncio.create_task(app.run())

    async def speaking() -> bool:
        return app.last_turn.get("kind") == "started"

    async def streaming() -> bool:
        return app.publisher is not None and app.publisher.stats.frames_sent > 25

    await until(streaming, 20, "frames to stream", interval=0.1)
    await app.say("A sentence long enough to be cut in the middle by the end of the show.")
    await until(speaking, 10, "the avatar to speak", interval=0.1)
    assert await active_sessions(node.target) == 1

    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # cancelled again while its cleanup runs
    with pytest.raises(asyncio.CancelledError):
        await task

    assert app.publisher is not None and not app.publisher._thread.is_alive()
    assert port_is_free(control_port)
    with publishing_lock(destination):  # a new command could publish there at once
        pass
    await until(sessions_idle, 5, "the node session to close", interval=0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_command_cleanly_while_it_waits_for_the_node(start, sig):
    command = start(
        "--target",
        f"127.0.0.1:{free_port()}",
        "--udp",
        str(free_port(socket.SOCK_DGRAM)),
        "--size",
        "320x240",
        "--say",
        "never said",
    )
    command.wait_for(r"cannot start a session")
    began = time.monotonic()
    command.process.send_signal(sig)
    assert command.finish(15) == 0, command.output
    assert time.monotonic() - began < 5
    assert "Traceback" not in command.output
