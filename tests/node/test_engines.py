"""A node serves several engines at once; a session picks one by name."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from avatar_client.errors import AvatarError
from avatar_node.engines import registry
from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb

from .conftest import Call, channel, start_event


@pytest.fixture(scope="module")
def two_engine_node():
    with start_background_node(NodeConfig(port=0, engines=["portrait", "testcard"], max_sessions=4)) as node:
        yield node


async def test_one_session_on_each_engine_at_once(two_engine_node, photo):
    async with channel(two_engine_node.target) as stub:
        info = await stub.GetNodeInfo(pb.GetNodeInfoRequest())
        assert [(e.name, e.is_default) for e in info.engines] == [("portrait", True), ("testcard", False)]
        assert all(e.live_capacity >= 1 for e in info.engines)
        calls = {}
        for engine in ("", "testcard"):
            call = Call(stub)
            call.send(**start_event(photo, engine=engine))
            call.send(text=pb.SpeakText(text="Two engines, one node."))
            call.open()
            calls[engine] = call
        await asyncio.gather(*(c.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.speaking)
                               for c in calls.values()))
        assert (await stub.GetNodeInfo(pb.GetNodeInfoRequest())).active_sessions == 2
        for call in calls.values():
            call.send(end=pb.EndSession(discard_pending=True))
            call.close()
        await asyncio.gather(*(c.read_all() for c in calls.values()))
    assert calls[""].of("ready")[0].engine == "portrait"
    assert calls["testcard"].of("ready")[0].engine == "testcard"
    assert all(c.of("ended") for c in calls.values())


async def test_an_unknown_engine_names_the_loaded_ones(two_engine_node, photo):
    async with channel(two_engine_node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, engine="livetalk9000"))
        call.open()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read_all()
        with pytest.raises(grpc.aio.AioRpcError) as prepare:
            await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=photo, engine="livetalk9000"))
    for error in (info.value, prepare.value):
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "'portrait'" in error.details() and "'testcard'" in error.details()
        assert AvatarError.from_rpc_error(error).reason == "UNKNOWN_ENGINE"


def test_engines_come_from_entry_points_too(monkeypatch):
    """A separate package adds an engine with one entry point; the registry finds it."""
    from importlib.metadata import EntryPoint

    extra = EntryPoint(name="cardboard", value="avatar_node.engines.testcard:TestCardEngine",
                       group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [extra] if group == registry.ENTRY_POINT_GROUP else [])
    assert "cardboard" in registry.available()
    engine = registry.create("cardboard", weights_dir=None)
    assert engine.info.name == "testcard"
    with pytest.raises(ValueError, match="available"):
        registry.create("nope")
