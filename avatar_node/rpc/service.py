"""The AvatarNode gRPC service: Converse, PrepareAvatar, GetNodeInfo over an AvatarRuntime.

Requests are parsed leniently: a message that is not valid protobuf reaches the
handler as MALFORMED and gets INVALID_ARGUMENT, instead of grpc's INTERNAL and a
traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from avatar_proto import avatar_pb2 as pb
from google.protobuf.message import DecodeError

from avatar_node.pipeline import errors
from avatar_node.pipeline.errors import PipelineError
from avatar_node.pipeline.items import AVFrame, EndReason
from avatar_node.pipeline.runtime import AvatarRuntime
from avatar_node.pipeline.stream import AvatarStream

from . import convert
from .status import abort

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AvatarNode"].full_name
#: A call must send `start` within this time.
START_TIMEOUT_S = 30.0


#: Before an error status, what the client already sent is read (and dropped) for up to this
#: long: a client whose writes are still in flight would otherwise see INTERNAL, not the status.
DRAIN_S = 0.5
DRAIN_QUIET_S = 0.05


async def _drain(requests: AsyncIterator[Any]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_S
    try:
        while loop.time() < deadline:
            async with asyncio.timeout(DRAIN_QUIET_S):
                await anext(requests)  # type: ignore[call-overload]
    except (TimeoutError, StopAsyncIteration, grpc.aio.AioRpcError, grpc.aio.UsageError, grpc.aio.AbortError):
        pass


class _Malformed:
    """Stands in for a request that could not be parsed."""


MALFORMED = _Malformed()


def _lenient(message: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except (DecodeError, ValueError):
            return MALFORMED

    return parse


def _malformed(kind: str) -> PipelineError:
    return errors.invalid(
        "MALFORMED_MESSAGE",
        f"a message could not be parsed as avatar.v1.{kind}; check that the client uses the node's avatar.proto",
    )


class AvatarNodeService:
    def __init__(self, runtime: AvatarRuntime, auth_required: bool) -> None:
        self.runtime = runtime
        self.auth_required = auth_required
        #: Error statuses returned, by code name (for metrics).
        self.errors: Counter[str] = Counter()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Converse": grpc.stream_stream_rpc_method_handler(
                    self.Converse, _lenient(pb.ClientEvent), pb.ServerEvent.SerializeToString
                ),
                "PrepareAvatar": grpc.unary_unary_rpc_method_handler(
                    self.PrepareAvatar, _lenient(pb.PrepareAvatarRequest), pb.PrepareAvatarResponse.SerializeToString
                ),
                "GetNodeInfo": grpc.unary_unary_rpc_method_handler(
                    self.GetNodeInfo, _lenient(pb.GetNodeInfoRequest), pb.NodeInfo.SerializeToString
                ),
            },
        )

    async def _fail(self, context: grpc.aio.ServicerContext, error: PipelineError) -> None:
        self.errors[error.code.name] += 1
        await abort(context, error)

    # ---------------------------------------------------------------- unary

    async def GetNodeInfo(self, request: Any, context: grpc.aio.ServicerContext) -> pb.NodeInfo:
        if request is MALFORMED:
            await self._fail(context, _malformed("GetNodeInfoRequest"))
        return convert.node_info(self.runtime.status(), self.auth_required, self.runtime.voices())

    async def PrepareAvatar(self, request: Any, context: grpc.aio.ServicerContext) -> pb.PrepareAvatarResponse:
        try:
            if request is MALFORMED:
                raise _malformed("PrepareAvatarRequest")
            return convert.prepared(await self.runtime.prepare(request.image, request.engine))
        except PipelineError as exc:
            await self._fail(context, exc)
            raise  # unreachable: abort raises

    # ---------------------------------------------------------------- Converse

    async def Converse(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerEvent]:
        stream: AvatarStream | None = None
        reader: asyncio.Task[None] | None = None
        input_failed = asyncio.Event()
        try:
            first = await self._first_event(requests)
            avatar, options = convert.start_request(first.start)
            stream = await self.runtime.open_stream(avatar, options)
            yield pb.ServerEvent(ready=convert.ready(stream))
            reader = asyncio.create_task(self._read(requests, stream, input_failed))
            async for item in stream:
                if isinstance(item, AVFrame):
                    video, audio = convert.frame_events(item)
                    yield video
                    yield audio
                else:
                    yield convert.server_event(item)
            # The session is over; give the client a moment to finish sending (see DRAIN_S).
            await asyncio.wait({reader}, timeout=DRAIN_S)
        except PipelineError as exc:
            if reader is not None and input_failed.is_set():
                # It is draining what the client had already sent; let it finish (bounded).
                await asyncio.wait({reader}, timeout=DRAIN_S + 0.5)
            elif reader is None:
                await _drain(requests)
            await self._fail(context, exc)
        finally:
            if reader is not None:
                reader.cancel()
            if stream is not None:
                # Cancellation-safe: the teardown (and the slot's release) completes even if
                # this handler is cancelled again while waiting for it.
                await stream.aclose(EndReason.CLIENT_CANCELLED)

    async def _first_event(self, requests: AsyncIterator[Any]) -> pb.ClientEvent:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                first = await anext(requests)  # type: ignore[call-overload]
        except StopAsyncIteration:
            raise errors.precondition("NO_START", "the call ended before `start`; send `start` first") from None
        except TimeoutError:
            raise errors.precondition("NO_START", f"no `start` within {START_TIMEOUT_S:g} s; send "
                                                  f"`start` first") from None
        if first is MALFORMED:
            raise _malformed("ClientEvent")
        kind = first.WhichOneof("event")
        if kind != "start":
            raise errors.precondition("NO_START", f"the first event must be `start`, got `{kind or 'nothing'}`")
        return first

    async def _read(self, requests: AsyncIterator[Any], stream: AvatarStream, failed: asyncio.Event) -> None:
        try:
            async for event in requests:
                await self._apply(event, stream)
            await stream.end(reason=EndReason.INPUT_CLOSED)  # the client closed its side
        except PipelineError as exc:
            failed.set()
            stream.fail(exc)
            await _drain(requests)
        except asyncio.CancelledError:
            raise
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, grpc.aio.AbortError):
            pass  # the call is gone; the handler tears the stream down
        except Exception:
            log.exception("reading client events failed")
            stream.fail(errors.internal("the node failed to read the request; see the node's log"))

    @staticmethod
    async def _apply(event: Any, stream: AvatarStream) -> None:
        if event is MALFORMED:
            raise _malformed("ClientEvent")
        kind = event.WhichOneof("event")
        if kind == "speech_audio":
            msg = event.speech_audio
            await stream.push_speech(msg.pcm, msg.sample_rate, msg.channels or 1, msg.end_of_turn, msg.turn_id)
        elif kind == "text":
            await stream.say(event.text.text, event.text.voice, event.text.turn_id)
        elif kind == "listen_audio":
            msg = event.listen_audio
            await stream.push_listen(msg.pcm, msg.sample_rate, msg.channels or 1)
        elif kind == "control":
            action = event.control.WhichOneof("action")
            if action == "interrupt":
                stream.interrupt()
            elif action == "behaviour":
                stream.behaviour(event.control.behaviour.name)
            elif action == "prompt":
                stream.set_prompt(event.control.prompt.prompt)
            else:
                raise errors.invalid("EMPTY_CONTROL", "empty Control; set interrupt, behaviour or prompt")
        elif kind == "end":
            await stream.end(event.end.discard_pending)
        elif kind == "start":
            raise errors.precondition("ALREADY_STARTED", "the session has already started; send `start` once per call")
        else:
            raise errors.invalid("EMPTY_EVENT", "empty ClientEvent; set one of its fields")
