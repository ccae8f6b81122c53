"""The avatar node's gRPC server: Converse, PrepareAvatar, GetNodeInfo, health, reflection.

Capacity is a plain session count (`max_sessions`); a start over it gets
RESOURCE_EXHAUSTED so the client can go to another node. The health service reports
the AvatarNode service NOT_SERVING while the node is full or draining, so a
Kubernetes readiness probe takes it out of rotation; the overall status ("") stays
SERVING while the process is alive. Draining (SIGTERM): new sessions get UNAVAILABLE,
running ones get `grace_s` to finish, then end with reason "node_shutdown".
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from avatar_proto import avatar_pb2 as pb
from avatar_proto import avatar_pb2_grpc as pb_grpc

from . import __version__, errors
from .engines import registry
from .engines.base import AvatarInputError, Engine, Identity
from .scheduler import Scheduler
from .session import Session, SessionSettings

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AvatarNode"].full_name
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
#: A call must send `start` within this time.
START_TIMEOUT_S = 30.0
AUDIO_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    engine: str = registry.DEFAULT_ENGINE
    max_sessions: int = 4
    auth_token: str | None = None
    #: Seconds running sessions get to finish when the node is asked to stop.
    grace_s: float = 10.0
    #: Prepared avatars kept in memory.
    identity_cache_size: int = 64


class _IdentityCache:
    """Prepared identities by avatar id (content hash + engine), least recently used out."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[str, Identity] = OrderedDict()
        self._size = size
        self._pending: dict[str, asyncio.Future[Identity]] = {}

    @staticmethod
    def key(image: bytes, engine: str) -> str:
        return f"{engine}-{hashlib.sha256(image).hexdigest()[:32]}"

    def get(self, avatar_id: str) -> Identity | None:
        identity = self._items.get(avatar_id)
        if identity is not None:
            self._items.move_to_end(avatar_id)
        return identity

    async def prepare(self, image: bytes, engine: Engine, scheduler: Scheduler) -> tuple[Identity, bool]:
        key = self.key(image, engine.info.name)
        cached = self.get(key)
        if cached is not None:
            return cached, True
        if key in self._pending:  # the same photo is being prepared for another call
            return await asyncio.shield(self._pending[key]), True
        future: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            identity = await scheduler.run(engine.prepare, image)
            identity = Identity(
                avatar_id=key,
                engine=identity.engine,
                image_width=identity.image_width,
                image_height=identity.image_height,
                face=identity.face,
                faces_found=identity.faces_found,
                data=identity.data,
            )
            future.set_result(identity)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed here; waiters get it through shield
            raise
        finally:
            del self._pending[key]
        self._items[key] = identity
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return identity, False


def _status_error(exc: AvatarInputError) -> errors.NodeError:
    return errors.invalid(str(exc))


class AvatarNodeService(pb_grpc.AvatarNodeServicer):
    def __init__(self, config: NodeConfig, health_servicer: health.aio.HealthServicer) -> None:
        self.config = config
        self._health = health_servicer
        self.engine = registry.create(config.engine)
        self.scheduler = Scheduler(self.engine)
        self._encode_pool = ThreadPoolExecutor(max(2, config.max_sessions), thread_name_prefix="encode")
        self.identities = _IdentityCache(config.identity_cache_size)
        self.sessions: set[Session] = set()
        self._slots = 0  # sessions running or being set up
        self.draining = False
        self._synth = None
        self._synth_error = ""

    async def start(self) -> None:
        self.scheduler.start()
        try:
            from .speech.tts import SpeechSynthesizer

            self._synth = SpeechSynthesizer()
        except Exception as exc:  # the node still serves speech audio without a voice
            self._synth_error = str(exc)
            log.warning("text-to-speech unavailable: %s", exc)
        await self._update_health()

    async def aclose(self) -> None:
        await self.scheduler.aclose()
        self._encode_pool.shutdown(wait=False, cancel_futures=True)
        if self._synth is not None:
            self._synth.close()
        self.engine.close()

    async def _update_health(self) -> None:
        full = self._slots >= self.config.max_sessions
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if self.draining or full
            else health_pb2.HealthCheckResponse.SERVING
        )
        await self._health.set(SERVICE_NAME, status)

    # ---------------------------------------------------------------- unary

    async def GetNodeInfo(self, request: pb.GetNodeInfoRequest, context: grpc.aio.ServicerContext) -> pb.NodeInfo:
        info = self.engine.info
        return pb.NodeInfo(
            version=__version__,
            engines=[
                pb.EngineDescription(
                    name=info.name,
                    native_fps=info.native_fps,
                    frames_per_step=info.frames_per_step,
                    audio_lookahead_ms=info.audio_lookahead_ms,
                    is_default=True,
                    description=info.description,
                )
            ],
            max_sessions=self.config.max_sessions,
            active_sessions=self._slots,
            auth_required=bool(self.config.auth_token),
            voices=self._synth.voices() if self._synth else [],
            max_message_bytes=MAX_MESSAGE_BYTES,
            max_image_pixels=MAX_IMAGE_PIXELS,
            draining=self.draining,
        )

    def _check_engine(self, name: str) -> None:
        if name and name != self.engine.info.name:
            raise errors.not_found(
                f"engine {name!r} is not served by this node; it serves {self.engine.info.name!r}"
            )

    async def PrepareAvatar(
        self, request: pb.PrepareAvatarRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrepareAvatarResponse:
        try:
            self._check_engine(request.engine)
            if not request.image:
                raise errors.invalid("`image` is empty; send the bytes of a photo with a face")
            t = time.perf_counter()
            identity, cached = await self._prepare(request.image)
            return self._prepared(identity, cached, (time.perf_counter() - t) * 1000)
        except errors.NodeError as exc:
            await context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    async def _prepare(self, image: bytes) -> tuple[Identity, bool]:
        try:
            return await self.identities.prepare(image, self.engine, self.scheduler)
        except AvatarInputError as exc:
            raise _status_error(exc) from None

    @staticmethod
    def _prepared(identity: Identity, cached: bool, ms: float) -> pb.PrepareAvatarResponse:
        face = identity.face
        return pb.PrepareAvatarResponse(
            avatar_id=identity.avatar_id,
            image_width=identity.image_width,
            image_height=identity.image_height,
            face=pb.FaceBox(x=face.x, y=face.y, width=face.width, height=face.height) if face else None,
            faces_found=identity.faces_found,
            prepare_ms=ms,
            cached=cached,
        )

    # ---------------------------------------------------------------- Converse

    def _settings(self, start: pb.StartSession) -> SessionSettings:
        out = start.output
        width, height = out.width or 848, out.height or 480
        fps = out.fps or 25.0
        rate = out.audio_sample_rate or 48000
        if not (64 <= width <= 1920 and 64 <= height <= 1920) or width % 2 or height % 2:
            raise errors.invalid(
                f"output size {width}x{height} is not supported; use even sizes from 64 to 1920 (default 848x480)"
            )
        if not 1 <= fps <= 60:
            raise errors.invalid(f"output fps {fps:g} is not supported; use 1 to 60 (default 25)")
        if rate not in AUDIO_RATES:
            raise errors.invalid(
                f"audio_sample_rate {rate} is not supported; use one of {', '.join(map(str, AUDIO_RATES))}"
            )
        if out.codec not in (pb.VIDEO_CODEC_UNSPECIFIED, pb.VIDEO_CODEC_H264):
            raise errors.invalid("only H.264 output is supported")
        voice = start.voice
        if voice and self._synth is not None and voice not in self._synth.voices():
            raise errors.invalid(f"unknown voice {voice!r}; GetNodeInfo lists the voices")
        return SessionSettings(
            width=width,
            height=height,
            fps=fps,
            clock_rate=rate,
            live=start.mode != pb.SESSION_MODE_RENDER,
            voice=voice,
            prompt=start.prompt,
            bitrate_kbps=out.bitrate_kbps,
            keyframe_interval=out.keyframe_interval,
            stats_interval_ms=max(start.stats_interval_ms, 100) if start.stats_interval_ms else 0,
        )

    async def _identity_for(self, start: pb.StartSession) -> Identity:
        which = start.WhichOneof("avatar")
        if which == "image":
            if not start.image:
                raise errors.invalid("`image` is empty; send the bytes of a photo with a face")
            identity, _ = await self._prepare(start.image)
            return identity
        if which == "avatar_id":
            identity = self.identities.get(start.avatar_id)
            if identity is None:
                raise errors.not_found(
                    f"unknown avatar_id {start.avatar_id!r}; it may have been evicted — "
                    "call PrepareAvatar again or send the image in `start`"
                )
            return identity
        raise errors.invalid("`start` needs an avatar: set `image` (photo bytes) or `avatar_id`")

    async def Converse(
        self, request_iterator: AsyncIterator[pb.ClientEvent], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerEvent]:
        session: Session | None = None
        reader: asyncio.Task[None] | None = None
        holding = False
        try:
            try:
                first = await asyncio.wait_for(anext(request_iterator), START_TIMEOUT_S)
            except StopAsyncIteration:
                raise errors.precondition("the call ended before `start`; send `start` first") from None
            except asyncio.TimeoutError:
                raise errors.precondition(f"no `start` within {START_TIMEOUT_S:g} s") from None
            if first.WhichOneof("event") != "start":
                raise errors.precondition(
                    f"the first event must be `start`, got `{first.WhichOneof('event') or 'nothing'}`"
                )
            start = first.start
            self._check_engine(start.engine)
            settings = self._settings(start)
            if self.draining:
                raise errors.unavailable("the node is shutting down; connect to another node")
            if self._slots >= self.config.max_sessions:
                raise errors.exhausted(
                    f"the node is at capacity ({self.config.max_sessions} sessions); "
                    "retry on another node or later"
                )
            self._slots += 1  # held from here, while the photo is prepared
            holding = True
            await self._update_health()
            identity = await self._identity_for(start)
            session = Session(
                self.engine,
                self.scheduler,
                identity,
                settings,
                _resampler_factory(),
                self._synth.synthesize if self._synth else None,
                self._run_encode,
            )
            self.sessions.add(session)
            ready = await session.open()
            yield pb.ServerEvent(ready=ready)
            session.start()
            reader = asyncio.create_task(self._read(request_iterator, session))
            async for event in session.events():
                yield event
            if session.failure is not None:
                raise session.failure
        except errors.NodeError as exc:
            await context.abort(exc.code, exc.message)
        finally:
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            if session is not None:
                self.sessions.discard(session)
                await session.close()
            if holding:
                self._slots -= 1
                await self._update_health()

    async def _run_encode(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._encode_pool, fn, *args)

    async def _read(self, request_iterator: AsyncIterator[pb.ClientEvent], session: Session) -> None:
        try:
            async for event in request_iterator:
                await session.handle(event)
            session.finish()  # the client closed its side: play out what is queued, then end
        except errors.NodeError as exc:
            session.fail(exc)
        except AvatarInputError as exc:
            session.fail(_status_error(exc))
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError:
            pass  # the call is gone; the handler tears the session down
        except Exception:
            log.exception("reading client events failed")
            session.fail(errors.internal("the node failed to read the request; see the node's log"))

    # ---------------------------------------------------------------- drain

    async def drain(self, grace_s: float) -> None:
        self.draining = True
        await self._update_health()
        deadline = time.monotonic() + grace_s
        for session in list(self.sessions):
            session.finish()
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.fail(errors.unavailable("the node is shutting down; reconnect to another node"))


def _resampler_factory():  # type: ignore[no-untyped-def]
    from .media.audio import StreamResampler

    return StreamResampler


class _AuthInterceptor(grpc.aio.ServerInterceptor):
    """Bearer-token check on the AvatarNode service (health and reflection stay open)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        async def deny(request, context):  # type: ignore[no-untyped-def]
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong token; send metadata `authorization: Bearer <token>`",
            )

        async def deny_stream(request_iterator, context):  # type: ignore[no-untyped-def]
            # Take the first event before refusing: a client still writing it would
            # otherwise see its write fail (INTERNAL) instead of this status.
            try:
                await asyncio.wait_for(anext(request_iterator), 2.0)
            except (StopAsyncIteration, asyncio.TimeoutError, grpc.aio.AioRpcError):
                pass
            await deny(None, context)
            yield  # pragma: no cover

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny_stream)

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        if not details.method.startswith(f"/{SERVICE_NAME}/"):
            return await continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._expected):
                    return await continuation(details)
        return self._deny_stream if details.method.endswith("/Converse") else self._deny_unary


class AvatarNodeServer:
    """The node as an object: `await start()`, `await stop()`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self.service: AvatarNodeService | None = None

    async def start(self) -> int:
        interceptors = [_AuthInterceptor(self.config.auth_token)] if self.config.auth_token else []
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        health_servicer = health.aio.HealthServicer()
        self.service = AvatarNodeService(self.config, health_servicer)
        await self.service.start()
        pb_grpc.add_AvatarNodeServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        self.port = server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.host}:{self.config.port}")
        await server.start()
        self._server = server
        log.info("avatar node listening on %s:%d (engine %s)", self.config.host, self.port, self.config.engine)
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        if self._server is None or self.service is None:
            return
        grace = self.config.grace_s if grace_s is None else grace_s
        await self.service.drain(grace)
        await self._server.stop(1.0)
        await self.service.aclose()
        self._server = None

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
        port = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(timeout=60)
        self.target = f"{config.host}:{port}"
        self._stopped = False

    @property
    def server(self) -> AvatarNodeServer:
        return self._server

    def stop(self, grace_s: float = 2.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        asyncio.run_coroutine_threadsafe(self._server.stop(grace_s), self._loop).result(timeout=grace_s + 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> "BackgroundNode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_background_node(config: NodeConfig | None = None) -> BackgroundNode:
    """Start a node on 127.0.0.1 (port 0 = any free port) in a background thread."""
    config = config or NodeConfig(port=0)
    return BackgroundNode(config)
