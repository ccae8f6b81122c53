"""Errors that end a stream or refuse a request, independent of any transport.

Each error has a status `code` (named like gRPC's, which every transport can map), a
machine-readable `reason` (UPPER_SNAKE, stable) and a message that says what to do.
"""

from __future__ import annotations

import enum

from avatar_node.engines.base import AvatarInputError


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    INTERNAL = "INTERNAL"


class PipelineError(Exception):
    def __init__(self, code: ErrorCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"PipelineError({self.code.name}, {self.reason}, {self.message!r})"


def invalid(reason: str, message: str) -> PipelineError:
    return PipelineError(ErrorCode.INVALID_ARGUMENT, reason, message)


def precondition(reason: str, message: str) -> PipelineError:
    return PipelineError(ErrorCode.FAILED_PRECONDITION, reason, message)


def exhausted(reason: str, message: str) -> PipelineError:
    return PipelineError(ErrorCode.RESOURCE_EXHAUSTED, reason, message)


def not_found(reason: str, message: str) -> PipelineError:
    return PipelineError(ErrorCode.NOT_FOUND, reason, message)


def unavailable(reason: str, message: str) -> PipelineError:
    return PipelineError(ErrorCode.UNAVAILABLE, reason, message)


def internal(message: str = "the session failed inside the node; see the node's log") -> PipelineError:
    return PipelineError(ErrorCode.INTERNAL, "INTERNAL", message)


def from_input_error(exc: AvatarInputError) -> PipelineError:
    """An engine's or parser's complaint about user input, as INVALID_ARGUMENT."""
    return PipelineError(ErrorCode.INVALID_ARGUMENT, exc.reason, str(exc))
