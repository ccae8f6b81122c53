"""Bad input gets a clear status, and a concurrent session on the same node carries on untouched."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
import struct

import cv2
import grpc
import numpy as np
import pytest

from avatar_proto import avatar_pb2 as pb

from .conftest import Call, channel, start_event, tone


def _png_header_only_huge(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of the given size (all black), small on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@contextlib.asynccontextmanager
async def witness(target: str, photo: bytes):  # type: ignore[no-untyped-def]
    """A live session that must keep running at 1x, speaking, while the test misbehaves."""
    async with channel(target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, stats_interval_ms=0))
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "video")
        call.send(speech_audio=pb.SpeechAudio(pcm=tone(2.0).tobytes(), sample_rate=16000, end_of_turn=True))
        loop = asyncio.get_running_loop()
        started = loop.time()
        yield call
        await asyncio.sleep(max(0.0, 1.0 - (loop.time() - started)))  # watch it for a second at least
        call.send(end=pb.EndSession(discard_pending=True))
        call.close()
        await call.read_all()
        elapsed = loop.time() - started
        frames = call.of("video")
        stats = call.of("stats")[-1]
        assert call.of("ended"), "the witness session did not end normally"
        assert stats.frames_dropped == 0
        # Paced at 1x: about elapsed * 25 frames, give or take the jitter buffer.
        assert len(frames) >= elapsed * 25 * 0.8, (len(frames), elapsed)
        indices = [f.frame_index for f in frames]
        assert indices == list(range(indices[0], indices[0] + len(indices))), "frames went missing"


async def _expect_status(awaitable, code: grpc.StatusCode, *words: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == code, (info.value.code(), info.value.details())
    details = info.value.details() or ""
    for word in words:
        assert word.lower() in details.lower(), details
    return details


async def _converse_expecting(target: str, events: list[dict], code, *words, hold_open=False):  # type: ignore[no-untyped-def]
    async with channel(target) as stub:
        call = Call(stub)
        for e in events:
            call.send(**e)
        if not hold_open:
            call.close()
        call.open()
        return await _expect_status(call.read_all(timeout=30), code, *words)


async def test_non_image_bytes(node, photo):
    async with witness(node.target, photo):
        async with channel(node.target) as stub:
            await _expect_status(
                stub.PrepareAvatar(pb.PrepareAvatarRequest(image=b"this is not an image")),
                grpc.StatusCode.INVALID_ARGUMENT,
                "image",
            )
        await _converse_expecting(
            node.target, [start_event(b"\x00\x01garbage")], grpc.StatusCode.INVALID_ARGUMENT, "image"
        )


async def test_image_without_a_face(node, photo):
    rng = np.random.default_rng(1)
    sky = np.clip(rng.normal(128, 8, (360, 480, 3)), 0, 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", sky)
    assert ok
    async with witness(node.target, photo):
        await _converse_expecting(
            node.target, [start_event(png.tobytes())], grpc.StatusCode.INVALID_ARGUMENT, "face"
        )


async def test_huge_image_is_refused_before_decoding(node, photo):
    huge = _png_header_only_huge(20000, 20000)
    assert len(huge) < 4 * 1024 * 1024
    async with witness(node.target, photo):
        async with channel(node.target) as stub:
            await _expect_status(
                stub.PrepareAvatar(pb.PrepareAvatarRequest(image=huge)),
                grpc.StatusCode.INVALID_ARGUMENT,
                "pixels",
            )


@pytest.mark.parametrize(
    "speech, words",
    [
        (pb.SpeechAudio(pcm=b"\x01\x02\x03", sample_rate=16000), ("even",)),
        (pb.SpeechAudio(pcm=b"\x00\x00" * 160, sample_rate=0), ("sample_rate", "8000")),
        (pb.SpeechAudio(pcm=b"\x00\x00" * 160, sample_rate=10_000_000), ("sample_rate", "192000")),
    ],
    ids=["odd-length-pcm", "rate-0", "rate-10MHz"],
)
async def test_bad_speech_audio(node, photo, speech, words):
    async with witness(node.target, photo):
        await _converse_expecting(
            node.target,
            [start_event(photo), {"speech_audio": speech}],
            grpc.StatusCode.INVALID_ARGUMENT,
            *words,
            hold_open=True,
        )


async def test_text_before_start(node, photo):
    async with witness(node.target, photo):
        await _converse_expecting(
            node.target, [{"text": pb.SpeakText(text="hello")}], grpc.StatusCode.FAILED_PRECONDITION, "start"
        )


async def test_two_starts(node, photo):
    async with witness(node.target, photo):
        await _converse_expecting(
            node.target,
            [start_event(photo), start_event(photo)],
            grpc.StatusCode.FAILED_PRECONDITION,
            "already",
            hold_open=True,
        )


async def test_oversized_message(node, photo):
    too_big = b"\x00\x00" * (9 * 1024 * 1024)  # 18 MiB > the node's 16 MiB limit
    async with witness(node.target, photo):
        await _converse_expecting(
            node.target,
            [start_event(photo), {"speech_audio": pb.SpeechAudio(pcm=too_big, sample_rate=16000)}],
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            hold_open=True,
        )


async def test_bad_output_format(node, photo):
    async with witness(node.target, photo):
        await _converse_expecting(
            node.target, [start_event(photo, width=321)], grpc.StatusCode.INVALID_ARGUMENT, "even"
        )


async def test_client_vanishing_mid_turn_frees_its_slot(node, photo):
    async with channel(node.target) as stub:
        before = (await stub.GetNodeInfo(pb.GetNodeInfoRequest())).active_sessions
    async with witness(node.target, photo):
        async with channel(node.target) as stub:
            call = Call(stub)
            call.send(**start_event(photo))
            call.send(text=pb.SpeakText(text="I will be cut off in the middle of this long sentence, sadly."))
            call.open()
            await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.speaking)
            async with channel(node.target) as probe:
                during = (await probe.GetNodeInfo(pb.GetNodeInfoRequest())).active_sessions
            assert during == before + 2  # the witness and this one
            call.call.cancel()  # type: ignore[attr-defined]
        async with channel(node.target) as stub:
            for _ in range(100):
                now = (await stub.GetNodeInfo(pb.GetNodeInfoRequest())).active_sessions
                if now == before + 1:
                    break
                await asyncio.sleep(0.05)
            assert now == before + 1, "the vanished client's session was not released"
