"""Pipeline errors as gRPC statuses, with a google.rpc.ErrorInfo so clients need not parse English."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from avatar_node.pipeline.errors import PipelineError

ERROR_DOMAIN = "avatar.v1"


def grpc_code(error: PipelineError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code.name]


def to_status(error: PipelineError) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    code = grpc_code(error)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=[detail]))


async def abort(context: grpc.aio.ServicerContext, error: PipelineError) -> None:
    """End the call with `error` (raises, as grpc's abort does)."""
    await context.abort_with_status(to_status(error))
