"""The live feed over real gRPC on loopback (plain and TLS) and over an in-process runtime:
frames carry exactly their own audio on one timeline that survives a node being killed and
restarted, and closing (even cancelled) leaves no session on the node."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from avatar_client import AsyncAvatarClient, AvatarError, H264Decoder, VideoPacket, tls_credentials
from avatar_client.live_feed import (
    FeedFrame,
    FeedHealth,
    FeedStatus,
    FeedTurn,
    FeedUnavailable,
    LiveFeed,
    SessionSpec,
)

from avatar_node.server import NodeConfig, start_background_node

from ..ops.certs import make_pki
from ..support.node_process import NodeProcess, loopback_node
from ..support.waits import free_port

W, H, FPS, RATE = 320, 240, 25.0, 48_000


@pytest.fixture(scope="module")
def node():
    with start_background_node(NodeConfig(port=0, max_sessions=4)) as running:
        yield running


def spec(photo: bytes, **kw) -> SessionSpec:  # type: ignore[no-untyped-def]
    return SessionSpec(photo=photo, width=W, height=H, fps=FPS, **kw)


def speech(seconds: float, rate: int = RATE) -> np.ndarray:
    """A voiced tone that is never silent (so every sample of it can be found again)."""
    t = np.arange(round(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * 180 * t) + 4000 * np.sin(2 * np.pi * 530 * t) + 1000).astype(np.int16)


async def read_until(feed: LiveFeed, done, timeout: float = 30.0) -> list:  # type: ignore[no-untyped-def]
    items: list = []
    async with asyncio.timeout(timeout):
        async for item in feed:
            items.append(item)
            if done(item, items):
                return items
    raise AssertionError("the feed ended")


def frames_of(items: list) -> list[FeedFrame]:
    return [i for i in items if isinstance(i, FeedFrame)]


def check_timeline(feed: LiveFeed, frames: list[FeedFrame]) -> None:
    fmt = feed.format
    for frame in frames:
        assert frame.pts == fmt.pts(frame.index)
        assert frame.audio.dtype == np.int16 and len(frame.audio) == fmt.samples(frame.index)
    indexes = [f.index for f in frames]
    assert all(b > a for a, b in zip(indexes, indexes[1:])), "the timeline went back"


def test_each_frame_carries_exactly_its_audio_and_the_turn_is_placed_on_the_timeline(node, photo):
    async def run() -> None:
        feed = await LiveFeed.open_node(node.target, None, None, spec(photo))
        try:
            assert (feed.format.width, feed.format.height, feed.format.fps) == (W, H, FPS)
            said = speech(1.0)
            await feed.send_audio(said, RATE, end_of_turn=True, turn_id="t1")
            items = await read_until(feed, lambda i, _: isinstance(i, FeedTurn) and i.kind == "finished")
            items += await read_until(feed, lambda _, got: len(frames_of(got)) >= 5)
        finally:
            await feed.aclose()
        assert isinstance(items[0], FeedStatus) and items[0].connected
        frames = frames_of(items)
        check_timeline(feed, frames)
        assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + len(frames)))
        assert all(f.picture is not None and f.picture.shape == (H, W, 3) for f in frames)
        started = next(i for i in items if isinstance(i, FeedTurn) and i.kind == "started")
        finished = next(i for i in items if isinstance(i, FeedTurn) and i.kind == "finished")
        speaking = [f for f in frames if f.speaking]
        # The turn's frames are the speaking ones, and their audio is the speech, sample for sample.
        assert speaking[0].pts == started.pts
        assert speaking[-1].pts + len(speaking[-1].audio) == finished.pts
        played = np.concatenate([f.audio for f in speaking])
        assert len(played) == len(said) and np.array_equal(played, said)
        assert not any(np.any(f.audio) for f in frames if not f.speaking)
        assert any(isinstance(i, FeedHealth) for i in items), "the node's counters come through"

    asyncio.run(run())


def test_h264_frames_are_access_units_that_decode_in_order(node, photo):
    async def run() -> list[FeedFrame]:
        feed = await LiveFeed.open_node(node.target, None, None, spec(photo, video="h264", keyframe_interval=10))
        try:
            return frames_of(await read_until(feed, lambda _, got: len(frames_of(got)) >= 25))
        finally:
            await feed.aclose()

    frames = asyncio.run(run())
    assert frames[0].keyframe and all(f.picture is None and f.access_unit for f in frames)
    decoder = H264Decoder()
    for f in frames:
        packet = VideoPacket(f.access_unit or b"", f.pts, 0, f.keyframe, f.index, f.speaking, 0.0)
        assert len(decoder.decode(packet)) == 1
    assert sum(f.keyframe for f in frames) >= 2


def test_one_timeline_across_a_node_killed_and_restarted_on_the_same_port(photo):
    port = free_port()
    node: NodeProcess | None = loopback_node(port)
    statuses: list[FeedStatus] = []
    frames: list[FeedFrame] = []
    idle_times: list[float] = []

    async def run() -> None:
        nonlocal node
        assert node is not None
        feed = await LiveFeed.open_node(node.target, None, None, spec(photo, video="h264", keyframe_interval=5),
                                        retry_min_s=0.2, retry_max_s=1.0)
        try:
            async def take(until) -> None:  # type: ignore[no-untyped-def]
                async with asyncio.timeout(60):
                    async for item in feed:
                        if isinstance(item, FeedStatus):
                            statuses.append(item)
                        elif isinstance(item, FeedFrame):
                            frames.append(item)
                            if item.idle:
                                idle_times.append(time.monotonic())
                        if until():
                            return

            await take(lambda: len(frames) >= 25)
            node.kill()
            await take(lambda: len([s for s in statuses if not s.connected]) >= 4)
            with pytest.raises(FeedUnavailable, match="not reachable right now"):
                await feed.say("hello")
            restarting = asyncio.create_task(asyncio.to_thread(loopback_node, port))  # the feed goes on meanwhile
            await take(lambda: restarting.done())
            node = await restarting
            await take(lambda: statuses[-1].connected and not frames[-1].idle)
            await feed.send_audio(speech(0.5), RATE, end_of_turn=True)  # controls reach the new session
            await take(lambda: frames[-1].speaking)
        finally:
            await feed.aclose()
        check_timeline(feed, frames)

    try:
        asyncio.run(run())
    finally:
        if node is not None:
            node.close()
    assert statuses[0].connected and statuses[-1].connected
    lost = [s for s in statuses if not s.connected]
    delays = [s.retry_in_s for s in lost]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.0], delays  # back-off doubles up to its ceiling
    # While the node was away the timeline went on: idle frames, one index after another, at the frame rate.
    first_idle = next(i for i, f in enumerate(frames) if f.idle)
    back = next(i for i, f in enumerate(frames) if i > first_idle and not f.idle)
    away = frames[first_idle:back]
    assert all(f.idle and f.keyframe and not f.speaking and not np.any(f.audio) for f in away)
    assert [f.index for f in frames[first_idle - 1 : back + 1]] == list(
        range(frames[first_idle - 1].index, frames[back].index + 1)
    ), "idle frames fill the outage and the new session continues at the next index"
    assert frames[back].keyframe, "the new session is joined at a keyframe"
    span = idle_times[-1] - idle_times[0]
    assert len(idle_times) >= 20
    assert abs((len(idle_times) - 1) / span - FPS) < 0.15 * FPS, "idle frames come at the frame rate"


def test_tls_node_is_reached_with_its_ca_and_refused_in_plaintext(tmp_path, photo):
    pki = make_pki(tmp_path)
    config = NodeConfig(port=0, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    with start_background_node(config) as tls_node:
        target = tls_node.target.replace("127.0.0.1", "localhost")  # the name in the certificate

        async def run() -> list[FeedFrame]:
            feed = await LiveFeed.open_node(target, None, tls_credentials(ca=pki.ca), spec(photo))
            try:
                return frames_of(await read_until(feed, lambda _, got: len(frames_of(got)) >= 3))
            finally:
                await feed.aclose()

        assert len(asyncio.run(run())) == 3

        async def plaintext() -> None:
            await LiveFeed.open_node(target, None, None, spec(photo), connect_timeout_s=10)

        with pytest.raises(AvatarError) as refused:
            asyncio.run(plaintext())
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE


IN_PROCESS = """
import asyncio, sys
import numpy as np
from avatar_client.live_feed import FeedFrame, FeedTurn, LiveFeed, SessionSpec
assert not any(m.startswith("avatar_node") for m in sys.modules), "the client imported the node"
from avatar_node.pipeline import AvatarRuntime
photo = open(sys.argv[1], "rb").read()

async def main():
    async with AvatarRuntime(["portrait"], max_sessions=1, text_to_speech=False) as runtime:
        feed = await LiveFeed.open_runtime(runtime, SessionSpec(photo=photo, width=320, height=240, fps=25))
        said = (8000 * np.sin(np.arange(24000) / 24000 * 2 * np.pi * 200)).astype(np.int16)
        await feed.send_audio(said, 24000, end_of_turn=True)
        frames, finished = [], False
        async with asyncio.timeout(30):
            async for item in feed:
                if isinstance(item, FeedFrame):
                    frames.append(item)
                    assert item.picture.shape == (240, 320, 3) and item.access_unit is None
                    assert item.pts == feed.format.pts(item.index)
                    assert len(item.audio) == feed.format.samples(item.index)
                finished = finished or (isinstance(item, FeedTurn) and item.kind == "finished")
                if finished and not item.speaking if isinstance(item, FeedFrame) else False:
                    break
        await feed.aclose()
        assert not runtime.streams, "the runtime's stream was left open"
    spoken = sum(len(f.audio) for f in frames if f.speaking)
    assert abs(spoken - 48000) <= 1920, spoken  # 0.5 s at 24 kHz, played at 48 kHz
    assert [f.index for f in frames] == list(range(len(frames)))
    grpc_server = [m for m in sys.modules if m.startswith(("avatar_node.rpc", "avatar_node.server"))]
    assert not grpc_server, grpc_server
    print("ok", len(frames))

asyncio.run(main())
"""


def test_in_process_feed_over_an_avatar_runtime_needs_no_grpc_server(tmp_path, photo):
    (tmp_path / "photo.jpg").write_bytes(photo)
    run = subprocess.run([sys.executable, "-c", IN_PROCESS, str(tmp_path / "photo.jpg")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr


def test_aclose_under_cancellation_leaves_no_session_and_no_task(node, photo):
    async def active() -> int:
        async with AsyncAvatarClient(node.target) as client:
            return (await client.node_info()).active_sessions

    async def run() -> None:
        before = set(asyncio.all_tasks())
        feed = await LiveFeed.open_node(node.target, None, None, spec(photo))
        await feed.say("hello there, this is a sentence that takes a while to say")

        async def reader() -> None:
            async for _ in feed:
                pass

        reading = asyncio.create_task(reader())
        await asyncio.sleep(0.5)
        assert await active() == 1
        reading.cancel()  # the reader goes away mid-frame...
        closing = asyncio.create_task(feed.aclose())
        await asyncio.sleep(0)
        closing.cancel()  # ...and whoever was closing the feed is cancelled too
        await asyncio.gather(reading, closing, return_exceptions=True)
        deadline = time.monotonic() + 5
        while await active() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await active() == 0
        assert not set(asyncio.all_tasks()) - before - {asyncio.current_task()}, "a task outlived the feed"
        with pytest.raises(AvatarError, match="closed"):
            await feed.say("anyone?")
        with pytest.raises(StopAsyncIteration):
            await anext(feed)

    asyncio.run(run())


def test_a_feed_from_an_opener_runs_before_the_node_is_up_and_joins_it_at_a_keyframe(photo):
    """A stream starts at once: idle frames with no picture at the asked rate while the node is
    down, then the node's frames from its first keyframe, on the same timeline; notices pass."""
    from avatar_client.feed_items import FeedFormat, FeedNotice
    from avatar_client.feed_links import NodeLink

    port = free_port()
    target = f"127.0.0.1:{port}"
    h264 = spec(photo, video="h264", keyframe_interval=10)

    async def run() -> list:
        feed = LiveFeed.from_opener(lambda: NodeLink.open(target, None, None, h264), FeedFormat(W, H, FPS, RATE),
                                    describe="the node", retry_min_s=0.2, retry_max_s=0.4)
        node = None
        try:
            items = await read_until(feed, lambda _, got: len(frames_of(got)) >= 10)
            node = await asyncio.to_thread(start_background_node, NodeConfig(port=port, max_sessions=2))
            items += await read_until(feed, lambda i, _: isinstance(i, FeedStatus) and i.connected)
            await feed.behaviour("juggle")  # no such behaviour: the node says so in a notice
            items += await read_until(feed, lambda i, _: isinstance(i, FeedNotice))
            items += await read_until(feed, lambda _, got: sum(not f.idle for f in frames_of(got)) >= 12)
            return items
        finally:
            await feed.aclose()
            if node is not None:
                await asyncio.to_thread(node.stop)

    items = asyncio.run(run())
    frames = frames_of(items)
    assert [f.index for f in frames[:10]] == list(range(10)), "idle frames from the first moment, none skipped"
    assert all(f.idle and f.picture is None and f.access_unit is None for f in frames[:10])
    assert any(isinstance(i, FeedStatus) and not i.connected and "cannot start a session" in i.detail for i in items)
    first_node = next(f for f in frames if not f.idle)
    assert first_node.keyframe, "a session is joined at its keyframe"
    fmt = FeedFormat(W, H, FPS, RATE)
    for f in frames:
        assert f.pts == fmt.pts(f.index) and len(f.audio) == fmt.samples(f.index)
    indexes = [f.index for f in frames]
    assert all(b > a for a, b in zip(indexes, indexes[1:])), "the timeline went back"
    notice = next(i for i in items if isinstance(i, FeedNotice))
    assert notice.code == "unknown_behaviour" and "juggle" in notice.message


@pytest.mark.parametrize("where", ["node", "runtime"])
def test_the_users_voice_reaches_the_engine_as_listening(photo, where):
    """`listen` carries the user's voice to the engine, over a node and in process: the test card
    shows its blue listening marker while a loud voice is heard, and not before."""
    from avatar_node.engines.testcard import BAR_X
    from avatar_node.pipeline import AvatarRuntime

    voice = (0.8 * 32767 * np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE)).astype(np.int16)

    def listening(frame: FeedFrame) -> bool:
        assert frame.picture is not None
        return bool(frame.picture[2, int((BAR_X[0] + BAR_X[1]) / 2 * W), 2] > 200)

    async def run() -> list[FeedFrame]:
        card = SessionSpec(photo=photo, engine="testcard", width=W, height=H, fps=FPS)
        if where == "node":
            with start_background_node(NodeConfig(port=0, engines=["testcard"], text_to_speech=False)) as node:
                feed = await LiveFeed.open_node(node.target, None, None, card)
                return await listen_through(feed)
        runtime = AvatarRuntime(["testcard"], max_sessions=1, text_to_speech=False)
        await runtime.start()
        try:
            return await listen_through(await LiveFeed.open_runtime(runtime, card))
        finally:
            await runtime.aclose()

    async def listen_through(feed: LiveFeed) -> list[FeedFrame]:
        try:
            before = frames_of(await read_until(feed, lambda _, got: len(frames_of(got)) >= 10))
            for start in range(0, len(voice), RATE // 50):  # as a microphone delivers it, 20 ms at a time
                await feed.listen(voice[start : start + RATE // 50], RATE)
            during = frames_of(await read_until(feed, lambda _, got: len(frames_of(got)) >= 10))
            return before + during
        finally:
            await feed.aclose()

    frames = asyncio.run(run())
    assert not any(listening(f) for f in frames[:10]), "listening before the user spoke"
    assert sum(listening(f) for f in frames[10:]) >= 5, "the user's voice did not reach the engine"
