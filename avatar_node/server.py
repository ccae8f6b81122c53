"""The avatar node: the pipeline's runtime served over gRPC, with health and reflection.

Readiness: the health service reports `avatar.v1.AvatarNode` NOT_SERVING while the
node is draining, full, or cannot take another live session without slowing the ones
it serves, so a Kubernetes readiness probe takes it out of rotation; the overall
status ("") stays SERVING while the process is alive. Draining (SIGTERM): new calls get
UNAVAILABLE at once, running sessions finish their queued speech (or run out of
`grace_s`) and end with reason NODE_SHUTDOWN.

Optional: TLS (mutual TLS with a client CA; see `endpoint.py`) and Prometheus metrics on a
port of their own (`metrics.py`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .endpoint import ListenError, check_port_free, server_credentials
from .engines import registry
from .engines.base import Engine
from .metrics import MetricsServer, node_registry
from .pipeline.runtime import AvatarRuntime
from .rpc.auth import BearerAuthInterceptor
from .rpc.convert import MAX_MESSAGE_BYTES
from .rpc.service import SERVICE_NAME, AvatarNodeService

log = logging.getLogger(__name__)

#: Server-side keepalive. The node pings each connection every 20 s, with or without
#: calls in flight (max_pings_without_data 0 lifts gRPC's cap on pings while no data
#: flows), and closes it when a ping is not answered within 10 s: a client that vanished
#: without closing its connection (a crashed host, a dropped network, a NAT that forgot
#: the flow) is noticed within about 30 s, and its session ends and frees its slot.
#: Clients may send their own keepalive pings as often as every 5 s while no data flows;
#: more often than that is answered with GOAWAY (too_many_pings), as gRPC does.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    #: Engine names (or Engine objects); the first is the default.
    engines: Sequence[str | Engine] = field(default_factory=lambda: [registry.DEFAULT_ENGINE])
    max_sessions: int = 4
    auth_token: str | None = None
    #: Seconds running sessions get to finish when the node is asked to stop.
    grace_s: float = 10.0
    #: Prepared avatars kept in memory, by count and in bytes.
    identity_cache_items: int = 64
    identity_cache_bytes: int = 1 << 30
    weights_dir: str | None = None
    #: The livetalk engine's video decoder: "full", "tiny" or "auto" (None: the engine's default, full).
    vae: str | None = None
    text_to_speech: bool = True
    #: Share of the cores live sessions may plan to use (admission control); see pipeline/admission.py.
    live_load_target: float = 0.85
    #: Encode with NVENC where an NVIDIA GPU offers it, falling back to libx264.
    hardware_encoder: bool = False
    #: The web page and WHEP endpoint (the [web] extra): None = off, 0 = any free port.
    web_port: int | None = None
    web_host: str = "127.0.0.1"
    #: The photo web sessions use when the page names none (default: the bundled sample).
    web_default_photo: bytes | None = None
    #: TLS: PEM certificate chain and private key; with a client CA, clients must present a
    #: certificate it signed (mutual TLS).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    #: Prometheus `/metrics` on this port (0 = any free port; None = off), on `metrics_host`
    #: (default: `host`).
    metrics_port: int | None = None
    metrics_host: str | None = None


class AvatarNodeServer:
    """The node as an object: `await start()` (returns the port), `await stop()`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self.runtime: AvatarRuntime | None = None
        self.service: AvatarNodeService | None = None
        self._health: health.aio.HealthServicer | None = None
        self._health_update: asyncio.Task[None] | None = None
        self.web: Any = None  # avatar_node.web.server.WebServer, when config.web_port is set
        self.web_port = 0
        self.metrics: MetricsServer | None = None
        self.metrics_port = 0

    async def start(self) -> int:
        """Start serving; raises ListenError (a busy or unusable port) or ValueError (bad TLS files)."""
        config = self.config
        credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        check_port_free(config.host, config.port, "--port")
        if config.metrics_port is not None:
            if config.metrics_port == config.port != 0:
                raise ListenError("--metrics-port must differ from --port")
            check_port_free(config.metrics_host or config.host, config.metrics_port, "--metrics-port")
        self.runtime = AvatarRuntime(
            config.engines,
            max_sessions=config.max_sessions,
            identity_cache_items=config.identity_cache_items,
            identity_cache_bytes=config.identity_cache_bytes,
            weights_dir=config.weights_dir,
            vae=config.vae,
            text_to_speech=config.text_to_speech,
            live_load_target=config.live_load_target,
            hardware_encoder=config.hardware_encoder,
        )
        server: grpc.aio.Server | None = None
        try:
            await self.runtime.start()
            self.service = AvatarNodeService(self.runtime, bool(config.auth_token))
            errors = self.service.errors
            interceptors = (
                [BearerAuthInterceptor(config.auth_token, on_denied=lambda: errors.update(["UNAUTHENTICATED"]))]
                if config.auth_token else []
            )
            server = grpc.aio.server(
                interceptors=interceptors,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.so_reuseport", 0),
                    *KEEPALIVE_OPTIONS,
                ],
            )
            server.add_generic_rpc_handlers((self.service.handler(),))
            self._health = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            reflection.enable_server_reflection(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                server,
            )
            address = f"{config.host}:{config.port}"
            try:
                if credentials is None:
                    self.port = server.add_insecure_port(address)
                else:
                    self.port = server.add_secure_port(address, credentials)
            except RuntimeError:  # taken between the check above and now
                raise ListenError(f"cannot listen on {address}: the port is in use or the address is "
                                  "not this machine's; choose another --port (0 picks a free one)") from None
            if config.metrics_port is not None:
                self.metrics = MetricsServer(node_registry(self.runtime, errors))
                self.metrics_port = await self.metrics.start(
                    config.metrics_host or config.host, config.metrics_port)
            await server.start()
            if config.web_port is not None:
                await self._start_web(server)
        except BaseException:
            if self.metrics is not None:
                await self.metrics.stop()
            if server is not None:
                await server.stop(None)  # else grpc tears it down later, on a closed event loop
            await self.runtime.aclose()
            raise
        self._server = server
        self.runtime.add_listener(self._readiness_changed)
        await self._set_health()
        names = ", ".join(e.info.name for e in self.runtime.engines)
        log.info("avatar node listening on %s:%d%s (engines %s)", config.host, self.port,
                 " with TLS" if credentials else "", names)
        return self.port

    async def _start_web(self, grpc_server: grpc.aio.Server) -> None:
        """The web page and WHEP endpoint on this event loop, over the same runtime."""
        from .web import web_extra_missing

        missing = web_extra_missing()
        if missing is not None:
            await grpc_server.stop(None)
            raise ValueError(missing)
        from .web.server import WebConfig, WebServer

        assert self.runtime is not None and self.config.web_port is not None
        self.web = WebServer(self.runtime, WebConfig(
            host=self.config.web_host, port=self.config.web_port, auth_token=self.config.auth_token,
            default_photo=self.config.web_default_photo,
        ))
        try:
            self.web_port = await self.web.start()
        except OSError as exc:
            self.web = None
            await grpc_server.stop(None)
            raise OSError(f"cannot serve the web page on {self.config.web_host}:{self.config.web_port} "
                          f"({exc.strerror or exc}); pick another port") from None
        except BaseException:
            self.web = None
            await grpc_server.stop(None)
            raise

    def _readiness_changed(self) -> None:
        if self._health_update is None or self._health_update.done():
            self._health_update = asyncio.ensure_future(self._set_health())

    async def _set_health(self) -> None:
        if self._health is None or self.runtime is None:
            return
        ready = self.runtime.ready
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._health.set(SERVICE_NAME, status)
        if self.runtime.ready != ready:  # changed while we were setting it
            await self._set_health()

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain, then stop serving and release everything."""
        if self._server is None or self.runtime is None:
            return
        server, self._server = self._server, None
        grace = self.config.grace_s if grace_s is None else grace_s
        await self.runtime.drain(grace)
        if self.web is not None:  # its sessions ended with the drain; close what is left, stop serving
            await self.web.stop()
        await server.stop(1.0)
        if self.metrics is not None:
            await self.metrics.stop()
        if self._health_update is not None:
            await asyncio.gather(self._health_update, return_exceptions=True)
        await self.runtime.aclose()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where available (Linux, macOS), else asyncio's default."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


class BackgroundNode:
    """A node on its own event-loop thread, for the CLI's in-process mode and for tests."""

    def __init__(self, config: NodeConfig) -> None:
        self._loop = new_event_loop()
        self._server = AvatarNodeServer(config)
        self._thread = threading.Thread(target=self._loop.run_forever, name="avatar-node", daemon=True)
        self._thread.start()
        try:
            port = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(timeout=60)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            raise
        self.target = f"{config.host}:{port}"
        self._stopped = False

    @property
    def server(self) -> AvatarNodeServer:
        return self._server

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def web_url(self) -> str | None:
        """The web page's address, when the node serves one."""
        if self._server.web is None:
            return None
        return f"http://{self._server.config.web_host}:{self._server.web_port}/"

    def stop(self, grace_s: float = 2.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        asyncio.run_coroutine_threadsafe(self._server.stop(grace_s), self._loop).result(timeout=grace_s + 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BackgroundNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_background_node(config: NodeConfig | None = None) -> BackgroundNode:
    """Start a node on 127.0.0.1 (port 0 = any free port) in a background thread."""
    return BackgroundNode(config or NodeConfig(port=0))
