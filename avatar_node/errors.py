"""Errors that end a call with a gRPC status and a message that says what to do."""

from __future__ import annotations

import grpc


class NodeError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> NodeError:
    return NodeError(grpc.StatusCode.INVALID_ARGUMENT, message)


def precondition(message: str) -> NodeError:
    return NodeError(grpc.StatusCode.FAILED_PRECONDITION, message)


def exhausted(message: str) -> NodeError:
    return NodeError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def not_found(message: str) -> NodeError:
    return NodeError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> NodeError:
    return NodeError(grpc.StatusCode.UNAVAILABLE, message)


def internal(message: str) -> NodeError:
    return NodeError(grpc.StatusCode.INTERNAL, message)
