"""The one exception the SDK raises for a failed call."""

from __future__ import annotations

import grpc


class AvatarError(Exception):
    """A call to the avatar node failed.

    `code` is the gRPC status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAUTHENTICATED...)
    and `str(error)` is the node's own message, which says what to do.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. "INVALID_ARGUMENT"."""
        return self.code.name

    def __repr__(self) -> str:
        return f"AvatarError({self.code.name}, {self.message!r})"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "AvatarError":
        """Wrap a grpc (or grpc.aio) error, keeping the node's message."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else None
        if not details:
            details = f"the call failed with {code.name} and no message"
        if code == grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
            details += " (is the node running, and is --target HOST:PORT right?)"
        return cls(code, details)
