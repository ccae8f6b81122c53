"""The async client: one channel to a node, unary calls and session start."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import grpc
from avatar_proto import avatar_pb2, avatar_pb2_grpc

from .errors import AvatarError
from .events import NodeInfo, PreparedAvatar, SessionReady, event_from_proto
from .session import OUTBOX_SIZE, AvatarSession, request_stream

#: The largest message the node accepts; the client accepts the same.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

SessionModeName = Literal["live", "render"]
_MODES = {"live": avatar_pb2.SESSION_MODE_LIVE, "render": avatar_pb2.SESSION_MODE_RENDER}
_FRAMINGS = {"auto": avatar_pb2.FRAMING_AUTO, "fit": avatar_pb2.FRAMING_FIT}


def load_image(image: bytes | str | Path) -> bytes:
    """Photo bytes from bytes or a file path."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    path = Path(image)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such image file: {path}") from None


class AsyncAvatarClient:
    """Talks to one avatar node over gRPC.

    >>> async with AsyncAvatarClient("127.0.0.1:50051") as client:
    ...     session = await client.start_session(image=Path("me.jpg"), mode="render")

    `token` is sent as `authorization: Bearer <token>` on every call. Pass `credentials`
    for TLS: `tls_credentials()` (the system's CAs), `tls_credentials(ca="ca.pem")`, plus
    `cert=` and `key=` for mutual TLS. The channel opens on first use, in the running event loop.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self.target = target
        self._token = token
        self._credentials = credentials
        self._channel_options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *channel_options,
        ]
        self._channel: grpc.aio.Channel | None = None
        self._stub: avatar_pb2_grpc.AvatarNodeStub | None = None
        self._sessions: set[AvatarSession] = set()

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),) if self._token else ()

    def _node(self) -> avatar_pb2_grpc.AvatarNodeStub:
        if self._stub is None:
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._channel_options
                )
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._channel_options)
            self._stub = avatar_pb2_grpc.AvatarNodeStub(self._channel)
        return self._stub

    async def node_info(self, timeout: float | None = 10.0) -> NodeInfo:
        """Engines, voices, capacity and load of the node."""
        try:
            reply = await self._node().GetNodeInfo(
                avatar_pb2.GetNodeInfoRequest(), metadata=self._metadata, timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise AvatarError.from_rpc_error(error, tls=self._credentials is not None) from None
        return NodeInfo.from_proto(reply)

    async def prepare_avatar(
        self, image: bytes | str | Path, engine: str = "", timeout: float | None = 60.0
    ) -> PreparedAvatar:
        """Upload a photo once; start later sessions with the returned `avatar_id`."""
        request = avatar_pb2.PrepareAvatarRequest(image=load_image(image), engine=engine)
        try:
            reply = await self._node().PrepareAvatar(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise AvatarError.from_rpc_error(error, tls=self._credentials is not None) from None
        return PreparedAvatar.from_proto(reply)

    async def start_session(
        self,
        image: bytes | str | Path | None = None,
        *,
        avatar_id: str = "",
        engine: str = "",
        width: int = 848,
        height: int = 480,
        fps: float = 0.0,
        mode: SessionModeName = "live",
        voice: str = "",
        prompt: str = "",
        framing: str = "auto",
        audio_sample_rate: int = 48_000,
        bitrate_kbps: int = 0,
        keyframe_interval: int = 0,
        stats_interval_ms: int = 0,
    ) -> AvatarSession:
        """Open a session from a photo (`image`) or a prepared `avatar_id`, and wait for `ready`.

        `mode="render"` runs as fast as the engine can (for files); `"live"` is paced at 1x.
        `fps=0` takes the engine's own rate (`session.ready.fps` says which); an engine with
        one fixed rate refuses any other.
        Raises AvatarError with the node's message if the node refuses (bad photo, node full...).
        """
        if (image is None) == (not avatar_id):
            raise ValueError("pass exactly one of image= or avatar_id=")
        if mode not in _MODES:
            raise ValueError(f"mode must be 'live' or 'render', not {mode!r}")
        if framing not in _FRAMINGS:
            raise ValueError(f"framing must be 'auto' or 'fit', not {framing!r}")
        start = avatar_pb2.StartSession(
            engine=engine,
            output=avatar_pb2.OutputFormat(
                width=width,
                height=height,
                fps=fps,
                codec=avatar_pb2.VIDEO_CODEC_H264,
                bitrate_kbps=bitrate_kbps,
                keyframe_interval=keyframe_interval,
                audio_sample_rate=audio_sample_rate,
            ),
            voice=voice,
            prompt=prompt,
            framing=_FRAMINGS[framing],
            mode=_MODES[mode],
            stats_interval_ms=stats_interval_ms,
        )
        if image is not None:
            start.image = load_image(image)
        else:
            start.avatar_id = avatar_id

        outbox: asyncio.Queue[avatar_pb2.ClientEvent | None] = asyncio.Queue(OUTBOX_SIZE)
        outbox.put_nowait(avatar_pb2.ClientEvent(start=start))
        call = self._node().Converse(request_stream(outbox), metadata=self._metadata)

        def refuse(error: AvatarError) -> AvatarError:
            # End the request stream too: a request iterator left waiting after its call has
            # ended keeps grpc's consumer task alive and spoils later calls on the channel.
            outbox.put_nowait(None)
            call.cancel()
            return error

        try:
            first = await call.read()
        except grpc.aio.AioRpcError as error:
            raise refuse(AvatarError.from_rpc_error(error, tls=self._credentials is not None)) from None
        except BaseException:
            refuse(AvatarError(grpc.StatusCode.CANCELLED, "cancelled"))
            raise
        if first is grpc.aio.EOF:
            code = await call.code()
            details = await call.details() or "the node closed the session before it was ready"
            raise refuse(AvatarError(code, details))
        ready = event_from_proto(first, 0)
        if not isinstance(ready, SessionReady):
            raise refuse(
                AvatarError(
                    grpc.StatusCode.INTERNAL,
                    f"the node's first message was {first.WhichOneof('event')!r}, not 'ready'",
                )
            )
        session = AvatarSession(call, outbox, ready)
        self._sessions.add(session)
        call.add_done_callback(lambda _call: self._sessions.discard(session))
        return session

    async def aclose(self) -> None:
        """Cancel open sessions and close the channel. Idempotent."""
        for session in list(self._sessions):
            await session.aclose()
        self._sessions.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    async def __aenter__(self) -> AsyncAvatarClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
