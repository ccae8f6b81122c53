"""Node mode end to end: the agent's real DataStreamAudioOutput -> linked fake rooms -> our avatar
worker -> a real avatar node over gRPC (H.264 both ways of the wire) -> tracks read back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from avatar_livekit import AvatarJobRequest, AvatarSession
from avatar_livekit.feed_renderer import FeedRenderer
from avatar_livekit.job import ATTRIBUTE_PUBLISH_ON_BEHALF
from avatar_livekit.worker import AvatarWorker
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.testing import fake_job_context
from livekit.agents.voice.io import PlaybackFinishedEvent

from avatar_node.server import BackgroundNode, NodeConfig, start_background_node

from ..support.waits import until
from .conftest import RATE, Readback, Speech, abrupt_gaps, audio_series_for_video, best_lag, watch_audio_output
from .fake_room import FakeHub, FakeRoom

pytestmark = pytest.mark.timeout(120)
AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


@pytest.fixture(scope="module")
def node() -> Iterator[BackgroundNode]:
    with start_background_node(NodeConfig(port=0, engines=["testcard"], text_to_speech=False, max_sessions=4)) as n:
        yield n


def node_sessions(node: BackgroundNode) -> int:
    runtime = node.server.runtime
    assert runtime is not None
    return len(runtime.streams)


async def start_worker(hub: FakeHub, request: AvatarJobRequest, target: str, readback: Readback,
                       idle_timeout_s: float = 10.0) -> tuple[AvatarWorker, FakeRoom]:
    """What `avatar-livekit worker` does for one dispatch, in this process."""
    room = hub.room(request.avatar_identity, kind=AGENT, attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: request.agent_identity})
    room.on("local_track_published", lambda publication, track: readback.start([publication]))
    await room.connect()
    renderer = await FeedRenderer.open_node(target, None, None, request.session_spec())
    worker = AvatarWorker(renderer, agent_identity=request.agent_identity, idle_timeout_s=idle_timeout_s)
    await worker.start(room)
    return worker, room


@dataclass
class NodeRun:
    hub: FakeHub
    agent_room: FakeRoom
    session: AgentSession
    avatar: AvatarSession
    readback: Readback
    workers: list[AvatarWorker] = field(default_factory=list)
    finished: list[PlaybackFinishedEvent] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)


@asynccontextmanager
async def node_avatar(node: BackgroundNode, photo: bytes, engine: str = "testcard", width: int = 640,
                      height: int = 360) -> AsyncIterator[NodeRun]:
    hub = FakeHub()
    agent_room = hub.room("agent-1", kind=AGENT)
    await agent_room.connect()
    readback = Readback()
    workers: list[AvatarWorker] = []

    async def dispatch(request: AvatarJobRequest, room_name: str) -> str:
        worker, _ = await start_worker(hub, AvatarJobRequest.from_json(request.to_json()), node.target, readback)
        workers.append(worker)
        return "local-dispatch"

    with fake_job_context(room=agent_room):
        session = AgentSession()
        avatar = AvatarSession(mode="node", image=photo, engine=engine, width=width, height=height,
                               dispatcher=dispatch)
        await avatar.start(session, room=agent_room)
        run = NodeRun(hub, agent_room, session, avatar, readback, workers)
        watch_audio_output(session, run.finished, run.clears)
        await session.start(agent=Agent(instructions="You are a test."))
        try:
            yield run
        finally:
            await session.aclose()
            await avatar.aclose()
            for worker in workers:
                await worker.aclose()
            await readback.aclose()


async def test_the_agents_speech_is_rendered_on_the_node_and_published_in_sync(
    node: BackgroundNode, photo: bytes, short_speech: Speech
) -> None:
    async with node_avatar(node, photo) as run:
        await asyncio.sleep(0.5)
        said_at = time.monotonic()
        await run.session.say("Hello there", audio=short_speech.frames())
        await asyncio.sleep(0.5)
        worker_room = run.hub.room_of("avatar-agent-1")
        assert worker_room is not None
        assert worker_room.local_participant.attributes == {ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"}
        await run.session.say("Hello again", audio=short_speech.frames())
        await asyncio.sleep(0.3)
        assert node_sessions(node) == 1
        readback = run.readback
    await until(lambda: node_sessions(node) == 0, 5, "the node session to close")

    assert [f.interrupted for f in run.finished] == [False, False]
    for finished in run.finished:
        assert abs(finished.playback_position - short_speech.seconds) < 0.041, finished.playback_position
    assert {image.shape for _, image in readback.video} == {(360, 640, 3)}
    assert 24.0 <= readback.video_fps(since=said_at) <= 26.0
    # Continuous audio: as many samples as wall time, no stalls.
    steady = [(t, a) for t, a in readback.audio if t > said_at - 0.3]
    samples = sum(len(a) for _, a in steady)
    assert abs(samples / RATE - (steady[-1][0] - steady[0][0])) < 0.15
    assert np.diff([t for t, _ in steady]).max() < 0.12
    # Each utterance was published whole: its voiced span is the clip's.
    audio = readback.audio_samples()
    print(f"abrupt gaps in the published voice: {abrupt_gaps(audio)}")
    assert abrupt_gaps(audio) <= 1, "the voice has dropouts"
    audio = readback.audio_samples()
    voiced = np.abs(audio) > 30
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2])]
    spans, start, end = [], runs[0][0], runs[0][1]
    for a, b in runs[1:]:
        if a - end > RATE // 2:  # a pause longer than any inside the sentence
            spans.append((end - start) / RATE)
            start = a
        end = b
    spans.append((end - start) / RATE)
    lead = np.flatnonzero(np.abs(short_speech.samples) > 30)[0] / short_speech.rate
    assert len(spans) == 2 and all(abs(span + lead - short_speech.seconds) < 0.1 for span in spans), spans
    levels = readback.bar_levels()
    assert levels[:5].max() == 0 and levels.max() > 0.2
    lag, correlation = best_lag(levels, audio_series_for_video(readback, 1 / 25))
    assert abs(lag) <= 1 and correlation > 0.8, (lag, correlation)


async def test_clear_buffer_interrupts_with_the_published_position_and_idle_video(
    node: BackgroundNode, photo: bytes, long_speech: Speech
) -> None:
    async with node_avatar(node, photo) as run:
        handle = run.session.say("A long sentence", audio=long_speech.frames())
        readback = run.readback
        await until(lambda: len(readback.video) > 0 and readback.bar_levels()[-1] > 0.02, 10, "speech")
        await asyncio.sleep(1.2)
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 5)
        await asyncio.sleep(0.5)
        # The agent speaks again after the interrupt; that segment plays in full.
        await run.session.say("Hello", audio=long_speech.frames())
        await asyncio.sleep(0.2)
        assert run.clears and len(run.finished) == 2
    first, second = run.finished
    assert first.interrupted and not second.interrupted
    assert abs(second.playback_position - long_speech.seconds) < 0.041
    cleared_at = run.clears[0]
    levels = readback.bar_levels()
    after = [i for i, (t, _) in enumerate(readback.video) if cleared_at < t < cleared_at + 0.5]
    speaking_after = [i for i in after if levels[i] > 0.02]
    assert len(speaking_after) <= 3, f"{len(speaking_after)} frames showed speech after the interrupt"
    audio = readback.audio_samples()
    cut = [i for i, (t, _) in enumerate(readback.audio) if t > cleared_at][0]
    first_turn = np.concatenate([a for _, a in readback.audio[:cut + 15]])
    voiced = np.flatnonzero(np.abs(first_turn) > 30)
    lead = np.flatnonzero(np.abs(long_speech.samples) > 30)[0] / long_speech.rate
    published = (voiced[-1] - voiced[0]) / RATE + lead
    assert abs(first.playback_position - published) < 0.041, (first.playback_position, published)
    assert len(audio)


@asynccontextmanager
async def bare_agent(node: BackgroundNode, photo: bytes, idle_timeout_s: float = 10.0) -> AsyncIterator[tuple[FakeRoom, AvatarWorker, list[dict[str, Any]], Readback]]:
    """An agent room that speaks the protocol by hand, for what a well-behaved agent never does."""
    hub = FakeHub()
    agent_room = hub.room("agent-1", kind=AGENT)
    await agent_room.connect()
    reports: list[dict[str, Any]] = []

    def on_finished(data: rtc.RpcInvocationData) -> str:
        reports.append(json.loads(data.payload))
        return "ok"

    agent_room.local_participant.register_rpc_method("lk.playback_finished", on_finished)
    readback = Readback()
    request = AvatarJobRequest("agent-1", "avatar-1", image=photo, engine="testcard", width=320, height=240)
    worker, _ = await start_worker(hub, request, node.target, readback, idle_timeout_s=idle_timeout_s)
    try:
        yield agent_room, worker, reports, readback
    finally:
        await worker.aclose()
        await readback.aclose()


async def send_speech(room: FakeRoom, speech: Speech, close: bool = True) -> Any:
    writer = await room.local_participant.stream_bytes(
        "AUDIO_x", topic="lk.audio_stream", destination_identities=["avatar-1"],
        attributes={"sample_rate": str(speech.rate), "num_channels": "1"},
    )
    await writer.write(speech.samples.tobytes())
    if close:
        await writer.aclose()
    return writer


async def test_a_stream_that_never_closes_ends_after_the_idle_timeout_or_the_next_stream(
    node: BackgroundNode, photo: bytes, short_speech: Speech
) -> None:
    async with bare_agent(node, photo, idle_timeout_s=1.0) as (agent_room, worker, reports, readback):
        await send_speech(agent_room, short_speech, close=False)  # the trailer is lost
        await until(lambda: len(reports) == 1, short_speech.seconds + 5, "playback_finished")
        assert reports[0]["interrupted"] is False
        assert abs(reports[0]["playback_position"] - short_speech.seconds) < 0.041
        await send_speech(agent_room, short_speech, close=False)
        await asyncio.sleep(0.3)
        await send_speech(agent_room, short_speech)  # supersedes the open one at once
        await until(lambda: len(reports) == 3, 2 * short_speech.seconds + 5, "two more")
        assert worker.link.segments_received == 3
        frames_before = len(readback.video)
        await asyncio.sleep(1.0)
        assert len(readback.video) - frames_before >= 20, "the avatar stopped publishing"


async def test_a_storm_of_clear_buffer_calls_is_answered_once_and_the_video_goes_on(
    node: BackgroundNode, photo: bytes, long_speech: Speech
) -> None:
    async with bare_agent(node, photo) as (agent_room, worker, reports, readback):
        writer = await send_speech(agent_room, long_speech, close=False)
        await until(lambda: len(readback.video) and readback.bar_levels()[-1] > 0.02, 10, "speech")
        participant = agent_room.local_participant
        answers = await asyncio.gather(*[
            participant.perform_rpc(destination_identity="avatar-1", method="lk.clear_buffer", payload="")
            for _ in range(200)
        ])
        assert set(answers) == {"ok"}
        await writer.write(long_speech.samples[:4800].tobytes())  # more audio of the cleared segment
        await writer.aclose()
        await until(lambda: len(reports) == 1, 10, "playback_finished")
        frames_before = len(readback.video)
        await asyncio.sleep(1.0)
        assert len(readback.video) - frames_before >= 20, "the avatar stopped publishing"
        assert readback.bar_levels()[-20:].max() == 0, "the cleared speech came back"
        assert reports == [reports[0]] and reports[0]["interrupted"] is True
        assert worker.link.clears == 200
        assert node_sessions(node) == 1
    await until(lambda: node_sessions(node) == 0, 5, "the node session to close")


async def test_clear_buffer_from_another_participant_is_refused(node: BackgroundNode, photo: bytes) -> None:
    async with bare_agent(node, photo) as (agent_room, worker, reports, readback):
        intruder = agent_room.hub.room("intruder")
        await intruder.connect()
        answer = await intruder.local_participant.perform_rpc(
            destination_identity="avatar-1", method="lk.clear_buffer", payload="")
        assert answer == "reject" and worker.link.clears == 0


async def test_an_agent_that_reconnects_gets_its_report_and_is_heard_again(
    node: BackgroundNode, photo: bytes, short_speech: Speech
) -> None:
    async with bare_agent(node, photo) as (agent_room, worker, reports, readback):
        await send_speech(agent_room, short_speech, close=False)
        await asyncio.sleep(0.5)
        await agent_room.disconnect()  # gone mid-segment: its stream never closes
        await asyncio.sleep(short_speech.seconds)  # the segment finishes playing while the agent is away
        await agent_room.connect()
        await until(lambda: len(reports) == 1, 10, "the report kept for the agent")
        await send_speech(agent_room, short_speech)
        await until(lambda: len(reports) == 2, 10, "the second segment played")
        assert worker.link.segments_received == 2
        for report in reports:
            assert report["interrupted"] is False
            assert abs(report["playback_position"] - short_speech.seconds) < 0.041


async def test_the_worker_survives_the_node_restarting_without_going_dark(photo: bytes, short_speech: Speech) -> None:
    first = start_background_node(NodeConfig(port=0, engines=["testcard"], text_to_speech=False))
    port = int(first.target.rsplit(":", 1)[1])
    second: BackgroundNode | None = None
    try:
        async with bare_agent(first, photo) as (agent_room, worker, reports, readback):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(first.stop, 0.5)
            stopped_at = time.monotonic()
            await asyncio.sleep(1.0)
            second = start_background_node(NodeConfig(port=port, engines=["testcard"], text_to_speech=False))
            renderer = worker.renderer
            assert isinstance(renderer, FeedRenderer)
            await until(lambda: renderer.sessions_opened == 2, 15, "a new node session")
            await send_speech(agent_room, short_speech)
            await until(lambda: len(reports) == 1, 10, "playback on the new node")
            assert reports[0]["interrupted"] is False
            assert node_sessions(second) == 1
            times = [t for t, _ in readback.video if t > stopped_at - 0.2]
            assert np.diff(times).max() < 0.25, "the video stopped while the node was away"
        await until(lambda: node_sessions(second) == 0, 5, "the node session to close")
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_closing_while_the_node_is_away_leaves_no_session_behind(photo: bytes) -> None:
    first = start_background_node(NodeConfig(port=0, engines=["testcard"], text_to_speech=False))
    port = int(first.target.rsplit(":", 1)[1])
    second: BackgroundNode | None = None
    try:
        async with bare_agent(first, photo) as (agent_room, worker, reports, readback):
            renderer = worker.renderer
            assert isinstance(renderer, FeedRenderer)
            await asyncio.to_thread(first.stop, 0.5)
            second = start_background_node(NodeConfig(port=port, engines=["testcard"], text_to_speech=False))
            await asyncio.sleep(0.05)  # the renderer is waiting to open a session on the node that is back
            assert renderer.sessions_opened == 1
        await asyncio.sleep(3.0)  # long enough for any reconnect attempt left behind to land
        assert node_sessions(second) == 0, "a session was opened for a worker that had closed"
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_after_rejoining_the_room_the_worker_publishes_and_answers_again(
    node: BackgroundNode, photo: bytes, short_speech: Speech
) -> None:
    async with bare_agent(node, photo) as (agent_room, worker, reports, readback):
        hub = agent_room.hub
        old = hub.room_of("avatar-1")
        assert old is not None
        await old.disconnect()  # dropped; the worker keeps rendering meanwhile
        await asyncio.sleep(0.3)
        new = hub.room("avatar-1", kind=AGENT, attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"})
        seen: list[Any] = []
        new.on("local_track_published", lambda publication, track: seen.append(publication))
        await new.connect()
        await worker.attach(new)
        assert sorted(p.name for p in seen) == ["avatar_audio", "avatar_video"]
        assert "lk.audio_stream" not in old.byte_stream_handlers and "lk.clear_buffer" not in old.local_participant._rpc_handlers
        await send_speech(agent_room, short_speech)
        await until(lambda: len(reports) == 1, 10, "playback_finished after rejoining")
        assert reports[0]["interrupted"] is False
        assert abs(reports[0]["playback_position"] - short_speech.seconds) < 0.041


@pytest.fixture(scope="module")
def portrait_node() -> Iterator[BackgroundNode]:
    with start_background_node(NodeConfig(port=0, engines=["portrait"], text_to_speech=False, max_sessions=2)) as n:
        yield n


async def test_barge_in_shuts_the_published_mouth_and_it_stays_shut(
    portrait_node: BackgroundNode, photo: bytes, long_speech: Speech
) -> None:
    """The portrait engine on a node, interrupted mid-reply, as a subscriber sees the worker's
    published video: the first picture after the interrupt shows the mouth closing, it is shut
    within two frames, and it never opens again in the silence."""
    from avatar_node.engines.base import StreamOptions
    from avatar_node.engines.portrait import PortraitEngine
    from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box

    width, height = 424, 240
    box = mouth_box(PortraitEngine().prepare(photo), StreamOptions(width, height, 25.0))
    async with node_avatar(portrait_node, photo, engine="portrait", width=width, height=height) as run:
        readback = run.readback
        await until(lambda: len(readback.video) >= 10, 20, "the idle face")
        rest = float(np.median([mouth_aperture(image, box) for _, image in readback.video[:10]]))
        handle = run.session.say("A long sentence", audio=long_speech.frames())

        def opening_wide() -> bool:
            """Interrupt while the mouth is opening, well open, read from the published pictures."""
            video = readback.video
            if len(video) < 40:
                return False
            last, before = (mouth_aperture(image, box) - rest for _, image in video[-1:-3:-1])
            return last > before and last > 4.0

        await until(opening_wide, 15, "the mouth open in speech")
        handle.interrupt()
        await until(lambda: run.clears, 5, "clear_buffer")
        cleared_at = run.clears[0]
        await until(lambda: sum(t > cleared_at for t, _ in readback.video) >= 25, 10, "a second of pictures")
        video = list(readback.video)
        await asyncio.wait([asyncio.ensure_future(handle.wait_for_playout())], timeout=5)
        finished = list(run.finished)

    aperture = [mouth_aperture(image, box) - rest for _, image in video]
    cut = next(i for i, (t, _) in enumerate(video) if t > cleared_at)  # the first picture after the interrupt
    at_interrupt, after = aperture[cut - 1], aperture[cut:]
    print(f"node mode: mouth beyond rest at the interrupt {at_interrupt:.1f}; after: "
          + ", ".join(f"{a:.1f}" for a in after[:8]))
    assert max(aperture[:cut]) > 3.0
    assert after[0] <= max(at_interrupt, 1.0), "the first picture after the interrupt opens the mouth wider"
    assert after[1] < 1.0, "the mouth is not shut two frames after the interrupt"
    assert max(after[1:]) < 1.0, "the mouth opened again in silence"
    assert [f.interrupted for f in finished] == [True]
