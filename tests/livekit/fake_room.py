"""Duck-typed LiveKit rooms linked in process: participants, byte streams and RPC, no server.

Only what the agent's data-stream audio output, the avatar runner's kin and our worker use:
events (`on`/`off`), `isconnected()`, participants, `register_byte_stream_handler`,
`local_participant.register_rpc_method / perform_rpc / stream_bytes / publish_track`.
Published tracks are real `rtc` local tracks, so what was published can be read back with
`rtc.VideoStream` / `rtc.AudioStream`. Method and topic names are passed through untouched:
a wrong name on either side fails the way it would on a server (UNSUPPORTED_METHOD, no handler).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from livekit import rtc

_ids = itertools.count(1)
#: One-way latency of the fake network.
LATENCY_S = 0.002


@dataclass
class FakeStreamInfo:
    stream_id: str
    topic: str
    name: str
    attributes: dict[str, str]
    mime_type: str = "application/octet-stream"
    size: int = 0
    timestamp: int = 0


class FakeByteStreamReader:
    def __init__(self, info: FakeStreamInfo) -> None:
        self.info = info
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> "FakeByteStreamReader":
        return self

    async def __anext__(self) -> bytes:
        if self.closed:
            raise StopAsyncIteration
        chunk = await self._queue.get()
        if chunk is None:
            self.closed = True
            raise StopAsyncIteration
        return chunk

    def close(self) -> None:
        self.closed = True


class FakeByteStreamWriter:
    def __init__(self, readers: list[FakeByteStreamReader]) -> None:
        self._readers = readers
        self.closed = False

    async def write(self, data: bytes) -> None:
        await asyncio.sleep(0)
        for reader in self._readers:
            for start in range(0, len(data), 15_000):  # the SDK's chunk size
                reader._queue.put_nowait(bytes(data[start : start + 15_000]))

    async def aclose(self, *, reason: str = "", attributes: dict[str, str] | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        for reader in self._readers:
            reader._queue.put_nowait(None)


@dataclass
class FakePublication:
    sid: str
    kind: int
    track: Any
    source: int
    name: str = ""

    async def wait_for_subscription(self) -> None:
        return None


@dataclass
class FakeRemoteParticipant:
    identity: str
    kind: int
    sid: str = field(default_factory=lambda: f"PA_{next(_ids)}")
    state: int = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
    attributes: dict[str, str] = field(default_factory=dict)
    track_publications: dict[str, FakePublication] = field(default_factory=dict)
    name: str = ""
    metadata: str = ""


class FakeLocalParticipant:
    def __init__(self, room: "FakeRoom", identity: str, kind: int, attributes: dict[str, str]) -> None:
        self.room = room
        self.identity = identity
        self.kind = kind
        self.sid = f"PA_{next(_ids)}"
        self.attributes = attributes
        self.name = identity
        self.metadata = ""
        self._rpc_handlers: dict[str, Callable[..., Any]] = {}
        self.track_publications: dict[str, FakePublication] = {}
        self.rpc_calls: list[tuple[str, str, str]] = []  # (destination, method, payload) performed

    def register_rpc_method(self, method_name: str, handler: Callable[..., Any] | None = None) -> Any:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._rpc_handlers[method_name] = fn
            return fn

        return register(handler) if handler is not None else register

    def unregister_rpc_method(self, method: str) -> None:
        self._rpc_handlers.pop(method, None)

    async def perform_rpc(
        self, *, destination_identity: str, method: str, payload: str, response_timeout: float | None = None,
        max_round_trip_latency: float | None = None,
    ) -> str:
        self.rpc_calls.append((destination_identity, method, payload))
        if not self.room.isconnected():
            raise rtc.RpcError(rtc.RpcError.ErrorCode.SEND_FAILED, "not connected")
        await asyncio.sleep(LATENCY_S)
        target = self.room.hub.room_of(destination_identity, exclude=self.room)
        if target is None:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND, "Recipient not found")
        handler = target.local_participant._rpc_handlers.get(method)
        if handler is None:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD, "Method not supported at destination")
        data = rtc.RpcInvocationData(f"RQ_{next(_ids)}", self.identity, payload, response_timeout or 10.0, method)
        try:
            result = handler(data)
            if asyncio.iscoroutine(result):
                result = await result
        except rtc.RpcError:
            raise
        except Exception as exc:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR, str(exc)) from None
        await asyncio.sleep(LATENCY_S)
        return str(result or "")

    async def stream_bytes(
        self, name: str, *, topic: str = "", destination_identities: list[str] | None = None,
        attributes: dict[str, str] | None = None, **_: Any,
    ) -> FakeByteStreamWriter:
        info = FakeStreamInfo(f"ST_{next(_ids)}", topic, name, dict(attributes or {}))
        readers = []
        for room in self.room.hub.rooms:
            if room is self.room or not room.isconnected():
                continue
            if destination_identities and room.local_participant.identity not in destination_identities:
                continue
            handler = room.byte_stream_handlers.get(topic)
            if handler is None:
                continue
            reader = FakeByteStreamReader(info)
            readers.append(reader)
            handler(reader, self.identity)
        return FakeByteStreamWriter(readers)

    async def publish_track(self, track: Any, options: Any = None) -> FakePublication:
        await asyncio.sleep(LATENCY_S)
        kind = rtc.TrackKind.KIND_VIDEO if isinstance(track, rtc.LocalVideoTrack) else rtc.TrackKind.KIND_AUDIO
        source = options.source if options is not None else 0
        publication = FakePublication(f"TR_{next(_ids)}", kind, track, source, getattr(track, "name", ""))
        self.track_publications[publication.sid] = publication
        self.room.published.append(publication)
        self.room.emit("local_track_published", publication, track)
        self.room.hub.track_published(self.room, publication)
        return publication

    async def unpublish_track(self, track_sid: str) -> None:
        publication = self.track_publications.pop(track_sid, None)
        if publication is not None:
            self.room.unpublished.append(publication)
            self.room.hub.track_unpublished(self.room, publication)


class FakeRoom(rtc.EventEmitter[str]):
    def __init__(self, hub: "FakeHub", identity: str, *, name: str = "room", kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
                 attributes: dict[str, str] | None = None) -> None:
        super().__init__()
        self.hub = hub
        self.name = name
        self.local_participant = FakeLocalParticipant(self, identity, kind, dict(attributes or {}))
        self.remote_participants: dict[str, FakeRemoteParticipant] = {}
        self.byte_stream_handlers: dict[str, Callable[..., Any]] = {}
        self.published: list[FakePublication] = []
        self.unpublished: list[FakePublication] = []
        self._connected = False
        self.connection_state = rtc.ConnectionState.CONN_DISCONNECTED

    def isconnected(self) -> bool:
        return self._connected

    def register_byte_stream_handler(self, topic: str, handler: Callable[..., Any]) -> None:
        if topic in self.byte_stream_handlers:
            raise ValueError(f"byte stream handler for topic '{topic}' already set")
        self.byte_stream_handlers[topic] = handler

    def unregister_byte_stream_handler(self, topic: str) -> None:
        self.byte_stream_handlers.pop(topic, None)

    async def connect(self, url: str = "", token: str = "", options: Any = None) -> None:
        self.hub.join(self)

    async def disconnect(self) -> None:
        self.hub.leave(self)


class FakeHub:
    """The 'server': which rooms (participants) are connected, and who hears whom."""

    def __init__(self) -> None:
        self.rooms: list[FakeRoom] = []

    def room(self, identity: str, **kwargs: Any) -> FakeRoom:
        return FakeRoom(self, identity, **kwargs)

    def room_of(self, identity: str, exclude: FakeRoom | None = None) -> FakeRoom | None:
        for room in self.rooms:
            if room is not exclude and room.isconnected() and room.local_participant.identity == identity:
                return room
        return None

    def join(self, room: FakeRoom) -> None:
        if room in self.rooms:
            return
        self.rooms.append(room)
        room._connected = True
        room.connection_state = rtc.ConnectionState.CONN_CONNECTED
        me = room.local_participant
        for other in self.rooms:
            if other is room:
                continue
            peer = other.local_participant
            remote = FakeRemoteParticipant(peer.identity, peer.kind, attributes=dict(peer.attributes))
            remote.track_publications = dict(peer.track_publications)
            room.remote_participants[peer.identity] = remote
            mirror = FakeRemoteParticipant(me.identity, me.kind, attributes=dict(me.attributes))
            other.remote_participants[me.identity] = mirror
            other.emit("participant_connected", mirror)
            other.emit("participant_active", mirror)
        room.emit("connection_state_changed", rtc.ConnectionState.CONN_CONNECTED)
        room.emit("connected")

    def leave(self, room: FakeRoom) -> None:
        if room not in self.rooms:
            return
        self.rooms.remove(room)
        room._connected = False
        room.connection_state = rtc.ConnectionState.CONN_DISCONNECTED
        room.remote_participants.clear()
        identity = room.local_participant.identity
        for other in self.rooms:
            gone = other.remote_participants.pop(identity, None)
            if gone is not None:
                other.emit("participant_disconnected", gone)
        room.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)
        room.emit("disconnected", rtc.DisconnectReason.CLIENT_INITIATED if hasattr(rtc, "DisconnectReason") else 0)

    def track_published(self, room: FakeRoom, publication: FakePublication) -> None:
        identity = room.local_participant.identity
        for other in self.rooms:
            remote = other.remote_participants.get(identity)
            if other is not room and remote is not None:
                remote.track_publications[publication.sid] = publication
                other.emit("track_published", publication, remote)

    def track_unpublished(self, room: FakeRoom, publication: FakePublication) -> None:
        identity = room.local_participant.identity
        for other in self.rooms:
            remote = other.remote_participants.get(identity)
            if other is not room and remote is not None:
                remote.track_publications.pop(publication.sid, None)
                other.emit("track_unpublished", publication, remote)
