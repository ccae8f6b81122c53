"""Generated Python stubs for proto/avatar/v1/avatar.proto (see tools/gen_proto.py)."""

from . import avatar_pb2, avatar_pb2_grpc

__all__ = ["avatar_pb2", "avatar_pb2_grpc"]
