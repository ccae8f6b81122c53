"""Capacity (RESOURCE_EXHAUSTED), auth (UNAUTHENTICATED) and health reflecting free capacity."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb
from avatar_proto import avatar_pb2_grpc as pb_grpc

from .conftest import Call, start_event

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def small_node():
    with start_background_node(NodeConfig(port=0, max_sessions=1, auth_token=TOKEN)) as running:
        yield running


def _auth(token: str = TOKEN):  # type: ignore[no-untyped-def]
    return (("authorization", f"Bearer {token}"),)


async def test_missing_or_wrong_token(small_node):
    async with grpc.aio.insecure_channel(small_node.target) as ch:
        stub = pb_grpc.AvatarNodeStub(ch)
        for metadata in (None, _auth("wrong")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetNodeInfo(pb.GetNodeInfoRequest(), metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in info.value.details()
        call = stub.Converse()  # refused before any event is read
        assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
        info_ok = await stub.GetNodeInfo(pb.GetNodeInfoRequest(), metadata=_auth())
        assert info_ok.auth_required and info_ok.max_sessions == 1


async def test_capacity_and_readiness(small_node, photo):
    service = pb.DESCRIPTOR.services_by_name["AvatarNode"].full_name
    async with grpc.aio.insecure_channel(small_node.target) as ch:
        stub = pb_grpc.AvatarNodeStub(ch)
        health = health_pb2_grpc.HealthStub(ch)  # open without a token, for probes

        async def serving() -> int:
            return (await health.Check(health_pb2.HealthCheckRequest(service=service))).status

        assert await serving() == health_pb2.HealthCheckResponse.SERVING
        first = Call(stub)
        first.send(**start_event(photo))
        first.open(metadata=_auth())
        await first.read_until(lambda e: e.WhichOneof("event") == "video")
        assert await serving() == health_pb2.HealthCheckResponse.NOT_SERVING

        second = Call(stub)
        second.send(**start_event(photo))
        second.open(metadata=_auth())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await second.read_all()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "capacity" in info.value.details()

        first.send(end=pb.EndSession())
        first.close()
        await first.read_all()
        assert first.of("ended")
        assert await serving() == health_pb2.HealthCheckResponse.SERVING
