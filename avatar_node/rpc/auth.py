"""Bearer-token check on the AvatarNode service; health and reflection stay open for probes."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from avatar_node.pipeline.errors import ErrorCode, PipelineError

from .service import SERVICE_NAME
from .status import to_status

_DENIED = PipelineError(
    ErrorCode.UNAUTHENTICATED, "BAD_TOKEN", "missing or wrong token; send metadata `authorization: Bearer <token>`"
)


def token_matches(header: str | bytes, token: str) -> bool:
    """`Bearer <token>`, the scheme in any case (RFC 7235), compared in constant time."""
    value = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, given = value.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, on_denied: Callable[[], None] | None = None) -> None:
        self._token = token

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            if on_denied is not None:  # counted for the metrics
                on_denied()
            await context.abort_with_status(to_status(_DENIED))

        async def deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            # Take the first event before refusing: a client still writing it would
            # otherwise see its write fail (INTERNAL) instead of this status.
            try:
                async with asyncio.timeout(2.0):
                    await anext(requests)
            except (TimeoutError, StopAsyncIteration, grpc.aio.AioRpcError):
                pass
            await deny(None, context)
            yield  # pragma: no cover

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny_stream)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not details.method.startswith(f"/{SERVICE_NAME}/"):
            return await continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and token_matches(value, self._token):
                return await continuation(details)
        return self._deny_stream if details.method.endswith("/Converse") else self._deny_unary
