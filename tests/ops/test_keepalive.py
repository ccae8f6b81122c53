"""Keepalive notices a client that vanished without closing its connection, and frees its session.

A TCP relay between client and node goes silent mid-session (no FIN, no RST: a crashed host
or a dropped network looks like this). The node's keepalive pings go unanswered and the
node closes the connection, which ends the session. The node's real option names are used,
with shorter times than the production 20 s + 10 s so the test takes seconds.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from avatar_client import AsyncAvatarClient, VideoPacket

import avatar_node.server as server_module
from avatar_node.server import NodeConfig, start_background_node


class SilentRelay:
    """Relays 127.0.0.1:port -> target until `go_silent()`; then holds the sockets open and passes nothing."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = threading.Event()
        self.stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self._sockets += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.05)
        while not self.stopped.is_set():
            if self.silent.is_set():
                time.sleep(0.05)  # read nothing, send nothing, close nothing
                continue
            try:
                data = source.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def go_silent(self) -> None:
        self.silent.set()

    def close(self) -> None:
        self.stopped.set()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def quick_keepalive(monkeypatch):
    names = dict(server_module.KEEPALIVE_OPTIONS)
    assert names["grpc.keepalive_time_ms"] == 20_000 and names["grpc.keepalive_timeout_ms"] == 10_000
    names.update({"grpc.keepalive_time_ms": 1_000, "grpc.keepalive_timeout_ms": 1_000})
    monkeypatch.setattr(server_module, "KEEPALIVE_OPTIONS", list(names.items()))


def test_a_vanished_client_is_noticed_and_its_session_ends(quick_keepalive, photo):
    with start_background_node(NodeConfig(port=0, max_sessions=2)) as node:
        runtime = node.server.runtime
        assert runtime is not None
        relay = SilentRelay(int(node.target.rsplit(":", 1)[1]))

        async def vanish() -> None:
            client = AsyncAvatarClient(f"127.0.0.1:{relay.port}")
            session = await client.start_session(image=photo, mode="live", width=320, height=240)
            async for event in session.events():
                if isinstance(event, VideoPacket) and event.frame_index >= 5:
                    break
            relay.go_silent()  # the client's host is gone; its connection is never closed
            began = time.monotonic()
            while runtime.admission.active and time.monotonic() - began < 20:
                await asyncio.sleep(0.1)
            assert runtime.admission.active == 0, "the node still holds the vanished client's session"
            assert time.monotonic() - began < 10
            assert runtime.ended["client_cancelled"] == 1
            relay.close()
            await client.aclose()

        try:
            asyncio.run(vanish())
        finally:
            relay.close()
