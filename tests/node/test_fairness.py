"""One client cannot hurt the others: each attack that once did runs beside a live witness that must keep 1x."""

from __future__ import annotations

import asyncio
import io

import av
import grpc
import numpy as np
import pytest
from PIL import Image

from avatar_proto import avatar_pb2 as pb

from ..support.node_process import NodeProcess
from .conftest import Call, channel, live_witness, rss_mb, start_event, tone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def busy_node():
    node = NodeProcess("--max-sessions", "8", "--avatar-cache-mb", "120")
    yield node
    assert node.terminate() == 0
    node.assert_clean_log()


@pytest.fixture(scope="module")
def large_photo(photo: bytes) -> bytes:
    """The sample portrait at 4000x4000: a photo that takes a while to prepare."""
    picture = Image.open(io.BytesIO(photo)).convert("RGB").resize((4000, 4000))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _decode(videos: list[pb.VideoPacket]) -> list[np.ndarray]:
    codec = av.CodecContext.create("h264", "r")
    frames = []
    for v in videos:
        frames += [f.to_ndarray(format="rgb24") for f in codec.decode(av.Packet(v.data))]
    return frames


async def test_low_fps_sessions_stay_stable_and_cheap(busy_node, photo):
    """fps 10 and 5 once made the face springs explode, burned a core and slowed everyone."""
    async with live_witness(busy_node.target, photo):
        async with channel(busy_node.target) as stub:
            calls = []
            for fps in (10.0, 5.0):
                call = Call(stub)
                call.send(start=pb.StartSession(image=photo, output=pb.OutputFormat(width=320, height=240, fps=fps)))
                call.send(text=pb.SpeakText(text="Slow frames, but a calm and steady face."))
                call.open()
                calls.append(call)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await asyncio.sleep(2.5)
            for call in calls:
                call.send(end=pb.EndSession(discard_pending=True))
                call.close()
            await asyncio.gather(*(c.read_all(timeout=20) for c in calls))
            elapsed = loop.time() - t0
    for call, fps in zip(calls, (10.0, 5.0)):
        videos = call.of("video")
        assert len(videos) >= 0.85 * fps * elapsed, (fps, len(videos))
        frames = _decode(videos)
        reference = frames[0].astype(np.float32)
        for frame in frames[1:]:  # the face moves a little; it never turns into black boxes
            assert np.abs(frame.astype(np.float32) - reference).mean() < 12


async def test_two_callers_with_one_new_photo_when_the_first_gives_up(busy_node, large_photo):
    fresh = large_photo + b"\x00fresh-photo-1"  # new bytes: not prepared yet
    async with channel(busy_node.target) as stub:
        first, second = Call(stub), Call(stub)
        first.send(start=pb.StartSession(image=fresh))
        second.send(start=pb.StartSession(image=fresh))
        first.open()
        second.open()
        await asyncio.sleep(0.1)  # both wait for the one preparation
        first.call.cancel()  # type: ignore[attr-defined]
        ready = await second.read_until(lambda e: e.WhichOneof("event") == "ready", timeout=10)
        assert ready.ready.session_id
        second.send(end=pb.EndSession(discard_pending=True))
        second.close()
        await second.read_all()


async def test_heavy_input_never_stalls_the_loop(busy_node, photo):
    """A 4,900-character text, 15 MiB of speech and of listen audio, text plus barge-in in a loop."""
    long_text = ("This is a long text that the node must synthesise and convert without freezing. " * 70)[:4900]
    big = (np.random.default_rng(3).normal(0, 3000, 15 * 1024 * 1024 // 2)).astype(np.int16).tobytes()
    async with live_witness(busy_node.target, photo, min_seconds=3.0):
        async with channel(busy_node.target) as stub:
            call = Call(stub)
            call.send(**start_event(photo, live=False, width=320, height=240))
            call.open()
            await call.read_until(lambda e: e.WhichOneof("event") == "ready")
            call.send(text=pb.SpeakText(text=long_text))
            call.send(speech_audio=pb.SpeechAudio(pcm=big, sample_rate=48000, end_of_turn=True))
            call.send(listen_audio=pb.ListenAudio(pcm=big, sample_rate=44100))
            for _ in range(3):
                call.send(text=pb.SpeakText(text=long_text[:1500]))
                call.send(control=pb.Control(interrupt=pb.Interrupt()))
                await asyncio.sleep(0.5)
            call.send(end=pb.EndSession(discard_pending=True))
            call.close()
            await call.read_all(timeout=60)


async def test_a_flood_of_large_photos_to_prepare(busy_node, photo, large_photo):
    large = large_photo

    async def flood(client: int) -> None:
        async with channel(busy_node.target) as stub:
            for i in range(2):  # new bytes each time: no cache hit
                try:
                    await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=large + f"{client}-{i}".encode()))
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # too many waiting: told to retry

    pid = busy_node.proc.pid
    async with live_witness(busy_node.target, photo, min_seconds=2.0):
        await asyncio.gather(*(flood(c) for c in range(4)))
    assert rss_mb(pid) < 900  # the avatar cache is capped in bytes (120 MB here)


async def test_render_sessions_do_not_starve_live_ones(busy_node, photo):
    text = "Rendering as fast as the engine can, for a file, must not slow the live avatar next door. " * 3
    async with live_witness(busy_node.target, photo, min_seconds=3.0):
        async with channel(busy_node.target) as stub:
            calls = []
            for _ in range(3):
                call = Call(stub)
                call.send(**start_event(photo, live=False, width=848, height=480))
                call.send(text=pb.SpeakText(text=text))
                call.send(end=pb.EndSession())
                call.close()
                call.open()
                calls.append(call)
            await asyncio.gather(*(c.read_all(timeout=120) for c in calls))
    assert all(c.of("ended") for c in calls)


async def _flood_with_listen_audio(target: str, photo: bytes) -> Call:
    """One render session sent 320 MB of listen audio, then half a second of speech."""
    chunk = np.zeros(8 * 1024 * 1024 // 2, np.int16).tobytes()
    async with channel(target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, live=False))
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "ready")
        for _ in range(40):
            call.send(listen_audio=pb.ListenAudio(pcm=chunk, sample_rate=16000))
        call.send(speech_audio=pb.SpeechAudio(pcm=tone(0.5).tobytes(), sample_rate=16000, end_of_turn=True))
        call.send(end=pb.EndSession())
        call.close()
        await call.read_all(timeout=60)
    return call


async def test_listen_audio_in_render_mode_is_bounded(busy_node, photo):
    """320 MB of listen audio, twice: the second time must not keep much more memory. The
    track keeps ten seconds; an unbounded one would keep 640 MB of float samples. The
    first time prepares the photo and lets the allocator settle (glibc kept 70 to
    150 MB of the first freed burst; tests/pipeline/test_listen.py checks
    the bound itself, exactly)."""
    pid = busy_node.proc.pid
    first = await _flood_with_listen_audio(busy_node.target, photo)
    assert any(n.code == pb.NOTICE_CODE_LISTEN_AUDIO_DROPPED for n in first.of("notice"))
    before = rss_mb(pid)
    await _flood_with_listen_audio(busy_node.target, photo)
    grown = rss_mb(pid) - before
    assert grown < 150, f"{grown:.0f} MB kept for 320 MB of listen audio"


async def test_an_open_turn_counts_against_the_speech_cap(busy_node, photo):
    minute = np.zeros(60 * 16000, np.int16).tobytes()
    async with channel(busy_node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, live=False))
        for _ in range(11):  # 660 s in one turn that never closes
            call.send(speech_audio=pb.SpeechAudio(pcm=minute, sample_rate=16000))
        call.open()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read_all(timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "600 s" in (info.value.details() or "")
