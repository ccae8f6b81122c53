"""The one exception the SDK raises for a failed call."""

from __future__ import annotations

import grpc


class AvatarError(Exception):
    """A call to the avatar node failed.

    `code` is the gRPC status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAUTHENTICATED...),
    `reason` the node's machine-readable reason (NO_FACE, BAD_AUDIO, NODE_AT_CAPACITY,
    NODE_DRAINING...; "" if none came), and `str(error)` the node's own message, which
    says what to do.
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. "INVALID_ARGUMENT"."""
        return self.code.name

    def __repr__(self) -> str:
        return f"AvatarError({self.code.name}, {self.reason or '-'}, {self.message!r})"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, tls: bool | None = None) -> AvatarError:
        """Wrap a grpc (or grpc.aio) error, keeping the node's message. `tls`: whether the
        channel used TLS, for a hint when the connection itself failed."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else None
        if not details:
            details = f"the call failed with {code.name} and no message"
        if code == grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
            details += f" ({_connection_hint(details, tls)})"
        return cls(code, details, _error_reason(error))


def _connection_hint(details: str, tls: bool | None) -> str:
    """What to check when a connection failed, from what gRPC said about it."""
    if "WRONG_VERSION_NUMBER" in details and tls:
        return "the node does not seem to serve TLS: connect without --tls/--ca, or give the node --tls-cert"
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return "the node's certificate is not signed by a CA this client trusts: pass the CA that signed it (--ca)"
    if "Socket closed" in details and tls is False:
        return "the node closed the connection: it may require TLS (--tls, or --ca FILE for its own CA)"
    if "Socket closed" in details and tls:
        return ("the node closed the connection: it may require a client certificate (--cert FILE --key FILE), "
                "or not be an avatar node")
    return "is the node running, and is --target HOST:PORT right?"


def _error_reason(error: grpc.RpcError) -> str:
    """The reason of the google.rpc.ErrorInfo the node attaches to every error status."""
    trailing = getattr(error, "trailing_metadata", None)
    try:
        metadata = trailing() if callable(trailing) else None
    except Exception:
        return ""
    for key, value in metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            from google.rpc import error_details_pb2, status_pb2

            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""
