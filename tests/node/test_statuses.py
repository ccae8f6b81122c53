"""Every bad call gets the right status, a message that says what to do and a machine-readable reason;
the node logs no traceback for any of them."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from avatar_client.errors import AvatarError
from avatar_proto import avatar_pb2 as pb
from avatar_proto import avatar_pb2_grpc as pb_grpc

from ..support.node_process import NodeProcess
from .conftest import Call, channel, rss_mb, start_event

CONVERSE = "/avatar.v1.AvatarNode/Converse"


async def _status(awaitable) -> tuple[grpc.StatusCode, str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    error = AvatarError.from_rpc_error(info.value)
    return info.value.code(), error.reason, info.value.details() or ""


async def _converse(target: str, events: list[dict], hold_open: bool = False) -> tuple[grpc.StatusCode, str, str]:
    async with channel(target) as stub:
        call = Call(stub)
        for event in events:
            call.send(**event)
        if not hold_open:
            call.close()
        call.open()
        return await _status(call.read_all(timeout=20))


async def _raw_converse(target: str, messages: list[bytes]) -> tuple[grpc.StatusCode, str, str]:
    """Send raw bytes as Converse messages (not necessarily valid protobuf)."""
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.stream_stream(CONVERSE, request_serializer=lambda b: b, response_deserializer=lambda b: b)(iter(messages))

        async def drain() -> None:
            async for _ in call:
                pass

        return await _status(drain())


async def test_malformed_messages_are_invalid_argument(node_process, photo):
    start = pb.ClientEvent(**start_event(photo)).SerializeToString()
    for messages in ([b"\xff\xff\xff\xff"], [start, b"\x12\xff\xff\x07junk"]):
        code, reason, details = await _raw_converse(node_process.target, messages)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_MESSAGE"), details
        assert "avatar.proto" in details
    async with grpc.aio.insecure_channel(node_process.target) as ch:
        prepare = ch.unary_unary("/avatar.v1.AvatarNode/PrepareAvatar", request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
        code, reason, _ = await _status(prepare(b"\x0a\xff\xff\xff\xff\x0f"))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_MESSAGE")


@pytest.mark.parametrize(
    "output, words",
    [
        (pb.OutputFormat(keyframe_interval=2**31), ("keyframe_interval", "600")),
        (pb.OutputFormat(keyframe_interval=4294967295), ("keyframe_interval",)),
        (pb.OutputFormat(bitrate_kbps=4294967295), ("bitrate_kbps", "50000")),
        (pb.OutputFormat(width=321), ("even",)),
        (pb.OutputFormat(fps=1000), ("fps",)),
        (pb.OutputFormat(audio_sample_rate=12345), ("audio_sample_rate",)),
    ],
    ids=["keyframe-2^31", "keyframe-max", "bitrate-max", "odd-width", "fps", "rate"],
)
async def test_out_of_range_output_formats(node_process, photo, output, words):
    start = pb.StartSession(image=photo, output=output)
    code, reason, details = await _converse(node_process.target, [{"start": start}])
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_OUTPUT_FORMAT"), details
    for word in words:
        assert word in details
    assert "x264" not in details and "preset" not in details  # no encoder internals


@pytest.mark.parametrize("voice", ["EN-US", "en-us+f3", "En-Gb+M1"])
async def test_voices_are_accepted_as_text_events_accept_them(node_process, photo, voice):
    async with channel(node_process.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, live=False, voice=voice))
        call.send(text=pb.SpeakText(text="Yes."))
        call.send(end=pb.EndSession())
        call.close()
        call.open()
        await call.read_all()
    assert call.of("ended")


async def test_wrong_order_and_empty_events(node_process, photo):
    cases = [
        ([{"text": pb.SpeakText(text="hi")}], grpc.StatusCode.FAILED_PRECONDITION, "NO_START"),
        ([start_event(photo), start_event(photo)], grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_STARTED"),
        ([start_event(photo), {"control": pb.Control()}], grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_CONTROL"),
        ([start_event(photo), {"end": pb.EndSession()}, {"text": pb.SpeakText(text="more")}],
         grpc.StatusCode.FAILED_PRECONDITION, "AFTER_END"),
        ([{"start": pb.StartSession(avatar_id="nope")}], grpc.StatusCode.NOT_FOUND, "UNKNOWN_AVATAR"),
        ([{"start": pb.StartSession(image=photo, engine="warp-drive")}], grpc.StatusCode.NOT_FOUND, "UNKNOWN_ENGINE"),
        ([{"start": pb.StartSession()}], grpc.StatusCode.INVALID_ARGUMENT, "NO_AVATAR"),
        ([start_event(photo), {"speech_audio": pb.SpeechAudio(pcm=b"\x01\x02\x03", sample_rate=16000)}],
         grpc.StatusCode.INVALID_ARGUMENT, "BAD_AUDIO"),
        ([start_event(photo), {"text": pb.SpeakText(text="x" * 6000)}], grpc.StatusCode.INVALID_ARGUMENT, "BAD_TEXT"),
        ([start_event(photo), {"control": pb.Control(prompt=pb.SetPrompt(prompt="p" * 3000))}],
         grpc.StatusCode.INVALID_ARGUMENT, "PROMPT_TOO_LONG"),
    ]
    for events, code, reason in cases:
        got = await _converse(node_process.target, events, hold_open=True)
        assert got[:2] == (code, reason), (events[-1], got)


async def test_notices_for_a_client_that_does_not_read_stay_bounded(node_process, photo):
    pid = node_process.proc.pid
    async with channel(node_process.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo))
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "video")
        before = rss_mb(pid)
        for _ in range(1500):  # 150 MB of unknown behaviour names, and nobody reads the replies
            call.send(control=pb.Control(behaviour=pb.Behaviour(name="x" * 100_000)))
        while not call.outgoing.empty():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        grown = rss_mb(pid) - before
        call.send(end=pb.EndSession())
        call.close()
        await call.read_all(timeout=60)
    assert grown < 40, f"the node grew by {grown:.0f} MB for a client that does not read"
    notices = call.of("notice")
    assert notices and all(len(n.message) < 400 for n in notices)  # a 100 KB name is not echoed back


async def test_auth_on_every_call_and_the_scheme_in_any_case(photo):
    node = NodeProcess("--max-sessions", "2", env={"AVATAR_NODE_TOKEN": "s3cret"})
    try:
        async with grpc.aio.insecure_channel(node.target) as ch:
            stub = pb_grpc.AvatarNodeStub(ch)
            for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "Basic s3cret"),)):
                for rpc in (stub.GetNodeInfo(pb.GetNodeInfoRequest(), metadata=metadata),
                            stub.PrepareAvatar(pb.PrepareAvatarRequest(image=photo), metadata=metadata)):
                    code, reason, details = await _status(rpc)
                    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_TOKEN") and "Bearer" in details
                call = stub.Converse(metadata=metadata)
                assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
            for scheme in ("Bearer", "bearer", "BEARER"):
                info = await stub.GetNodeInfo(pb.GetNodeInfoRequest(), metadata=(("authorization", f"{scheme} s3cret"),))
                assert info.auth_required
    finally:
        assert node.terminate() == 0
    node.assert_clean_log()


async def test_photo_problems_carry_their_reason(node_process, photo):
    import cv2
    import numpy as np

    from .test_bad_input import _png_header_only_huge

    sky = cv2.imencode(".png", np.full((360, 480, 3), 128, np.uint8))[1].tobytes()
    cases = [(b"not a picture", "BAD_IMAGE"), (sky, "NO_FACE"), (_png_header_only_huge(20000, 20000), "IMAGE_TOO_LARGE")]
    async with channel(node_process.target) as stub:
        for image, reason in cases:
            code, got, details = await _status(stub.PrepareAvatar(pb.PrepareAvatarRequest(image=image)))
            assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason), details
