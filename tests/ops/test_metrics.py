"""/metrics scraped while real sessions run on a real node: the counters move, and never go back."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import grpc
import pytest
from avatar_client import AsyncAvatarClient, AvatarError, VideoPacket

from avatar_node.server import NodeConfig, start_background_node

from .conftest import scrape, value

COUNTERS = (
    "avatar_node_sessions_started_total",
    "avatar_node_frames_sent_total",
    "avatar_node_live_lag_seconds_count",
    "avatar_node_engine_cpu_seconds_count",
    "avatar_node_encode_cpu_seconds_count",
)


@pytest.fixture(scope="module")
def node():
    with start_background_node(NodeConfig(port=0, max_sessions=2, auth_token="metrics-token",
                                          metrics_port=0)) as running:
        yield running


def test_metrics_move_during_sessions_and_stay_monotonic(node, photo):
    port = node.server.metrics_port
    before = scrape(port)
    assert value(before, "avatar_node_ready") == 1
    assert value(before, "avatar_node_max_sessions") == 2
    assert value(before, "avatar_node_live_capacity", engine="portrait") >= 1
    assert value(before, "process_cpu_seconds_total") > 0
    seen: list[dict] = []

    async def scenario() -> None:
        async with AsyncAvatarClient(node.target, "metrics-token") as client:
            live = await client.start_session(image=photo, mode="live", width=320, height=240)
            await live.say("Counting frames for the metrics.")
            frames = 0
            async for event in live.events():
                if not isinstance(event, VideoPacket):
                    continue
                frames += 1
                if frames in (10, 30):
                    seen.append(await asyncio.to_thread(scrape, port))  # during the session
                    if frames == 30:
                        break
            # The node is now full (2 slots): a render session takes the second, a third is refused.
            render = await client.start_session(image=photo, mode="render", width=320, height=240)
            with pytest.raises(AvatarError) as refused:
                await client.start_session(image=photo, mode="render", width=320, height=240)
            assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            await render.say("Done.")
            await render.end()
            async for _ in render.events():
                pass
            await render.aclose()
            await live.aclose()  # cancelled while live: ends as client_cancelled
            with pytest.raises(AvatarError):
                await client.start_session(image=b"not a photo", mode="render")
        async with AsyncAvatarClient(node.target, "wrong-token") as intruder:
            with pytest.raises(AvatarError):
                await intruder.node_info()

    asyncio.run(scenario())
    for _ in range(100):  # the node closes the cancelled session on its own; wait until it is counted
        after = scrape(port)
        if value(after, "avatar_node_sessions_active") == 0 and \
                value(after, "avatar_node_sessions_ended_total", reason="client_cancelled") >= 1:
            break
        time.sleep(0.05)

    during_early, during_late = seen
    # Frames, lag and CPU figures move while the live session runs...
    assert value(during_early, "avatar_node_sessions_active") >= 1
    sent, lags = "avatar_node_frames_sent_total", "avatar_node_live_lag_seconds_count"
    assert 0 < value(during_early, sent) < value(during_late, sent)
    assert value(during_late, lags) > value(before, lags)
    assert value(during_late, "avatar_node_engine_cpu_seconds_sum") > 0
    assert value(during_late, "avatar_node_encode_cpu_seconds_bucket", le="+Inf") == \
        value(during_late, "avatar_node_encode_cpu_seconds_count") > 0
    # ...and none goes back once the sessions have ended and their counters left with them.
    for name in COUNTERS:
        assert value(before, name) <= value(during_early, name) <= value(during_late, name) <= value(after, name), name
    assert value(after, "avatar_node_sessions_started_total") == value(before, "avatar_node_sessions_started_total") + 2
    assert value(after, "avatar_node_frames_sent_total") >= value(during_late, "avatar_node_frames_sent_total") + 1
    assert value(after, "avatar_node_sessions_active") == 0
    assert value(after, "avatar_node_sessions_refused_total", reason="NODE_AT_CAPACITY") == 1
    assert value(after, "avatar_node_sessions_ended_total", reason="end_requested") == 1
    assert value(after, "avatar_node_sessions_ended_total", reason="client_cancelled") == 1
    assert value(after, "avatar_node_errors_total", code="RESOURCE_EXHAUSTED") == 1
    assert value(after, "avatar_node_errors_total", code="INVALID_ARGUMENT") == 1
    assert value(after, "avatar_node_errors_total", code="UNAUTHENTICATED") == 1


def test_metrics_server_answers_only_metrics(node):
    base = f"http://127.0.0.1:{node.server.metrics_port}"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/nothing", timeout=10)
    assert missing.value.code == 404
    request = urllib.request.Request(f"{base}/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(request, timeout=10)
    assert posted.value.code == 405


def test_metrics_are_off_unless_asked_for():
    with start_background_node(NodeConfig(port=0)) as running:
        assert running.server.metrics is None
