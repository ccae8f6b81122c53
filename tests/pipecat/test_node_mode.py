"""The avatar service rendering on an avatar node over real gRPC on loopback: the same timeline as
in-process, a node killed and restarted under a running pipeline, TLS, a wrong token, and
nothing left on the node (its own session count) or in the loop after EndFrame or CancelFrame."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from avatar_client import AsyncAvatarClient, tls_credentials
from avatar_pipecat import AvatarVideoService, NodeAddress
from pipecat.frames.frames import ErrorFrame, InterruptionFrame, TTSStoppedFrame

from avatar_node.server import NodeConfig, start_background_node

from ..ops.certs import make_pki
from ..support.waits import free_port
from ..support.node_process import NodeProcess, loopback_node
from .harness import AvatarPipeline, Speech, best_lag, envelope, levels

pytestmark = pytest.mark.timeout(120)
W, H, FPS = 320, 240, 25.0


def on_node(photo: bytes, address: NodeAddress, engine: str = "testcard") -> AvatarVideoService:
    return AvatarVideoService(photo=photo, node=address, engine=engine, width=W, height=H, fps=FPS)


async def active_sessions(target: str) -> int:
    async with AsyncAvatarClient(target) as client:
        return (await client.node_info()).active_sessions


async def no_sessions_left(target: str) -> None:
    deadline = time.monotonic() + 5
    while await active_sessions(target) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await active_sessions(target) == 0, "the pipeline left a session on the node"


async def test_speech_on_a_node_comes_back_in_step_and_end_frame_leaves_no_session(
    node, photo: bytes, short_speech: Speech
) -> None:
    before = set(asyncio.all_tasks())
    async with AvatarPipeline(on_node(photo, NodeAddress(node.target))) as run:
        await run.until(lambda: len(run.frames()) >= 10)
        assert await active_sessions(node.target) == 1
        await run.say(short_speech)
        await run.until(lambda: run.finished_turns() >= 1)
        await run.end()
    await no_sessions_left(node.target)
    assert not set(asyncio.all_tasks()) - before - {asyncio.current_task()}, "a task outlived the pipeline"
    frames = run.frames()
    assert np.allclose(np.diff([f.pts for f in frames]), 1e9 / FPS, atol=1e6), "one timeline, one frame apart"
    spoken = np.concatenate([f.audio for f in frames if f.speech])
    assert abs(len(spoken) / 48000 - short_speech.seconds) < 0.05
    lag, corr = best_lag(levels(frames), envelope(frames))
    print(f"test card, node mode: best lag {lag:+d} frames, correlation {corr:.2f}")
    assert abs(lag) <= 1 and corr >= 0.8, (lag, corr)


async def test_cancel_frame_mid_sentence_leaves_no_session_and_no_task(node, photo: bytes, long_speech: Speech) -> None:
    before = set(asyncio.all_tasks())
    async with AvatarPipeline(on_node(photo, NodeAddress(node.target))) as run:
        await run.say(long_speech)
        await run.until(lambda: run.speech_frames() >= 5)
        await run.cancel()
    await no_sessions_left(node.target)
    assert not set(asyncio.all_tasks()) - before - {asyncio.current_task()}, "a task outlived the pipeline"


async def test_a_cancelled_runner_task_leaves_no_session(node, photo: bytes, long_speech: Speech) -> None:
    run = AvatarPipeline(on_node(photo, NodeAddress(node.target)))
    await run.__aenter__()
    await run.say(long_speech)
    await run.until(lambda: run.speech_frames() >= 5)
    assert run.running is not None
    run.running.cancel()  # the agent's own task is cancelled: no EndFrame, no CancelFrame from us
    await asyncio.gather(run.running, return_exceptions=True)
    await no_sessions_left(node.target)


async def test_an_interruption_on_a_node_pushes_no_speech_after_it(node, photo: bytes, long_speech: Speech) -> None:
    async with AvatarPipeline(on_node(photo, NodeAddress(node.target))) as run:
        await run.say(long_speech)
        await run.until(lambda: run.speech_frames() >= 25)
        await run.queue(InterruptionFrame())
        await run.until(lambda: any(isinstance(f, InterruptionFrame) for f in run.downstream()))
        cut = run.position_of(InterruptionFrame)
        await run.until(lambda: sum(f.position > cut for f in run.frames()) >= 10)
        await run.end()
    after = [f for f in run.frames() if f.position > cut]
    assert not any(f.speech or np.any(f.audio) for f in after), "speech audio was pushed after the interruption"
    shown = levels([f for f in after if f.picture is not None])
    assert np.all(shown[1:] <= 0.02), f"the mouth did not close within two frames: {np.round(shown[:4], 3)}"
    print(f"node mode: {run.avatar.frames_withheld} frames in flight withheld after the interruption")
    assert not any(isinstance(f, TTSStoppedFrame) for f in run.downstream()[cut:])


async def test_a_wrong_token_is_a_clear_error_and_the_pipeline_ends_by_itself(photo: bytes) -> None:
    with start_background_node(NodeConfig(host="127.0.0.1", port=0, auth_token="right")) as locked:
        run = AvatarPipeline(on_node(photo, NodeAddress(locked.target, token="wrong"), engine=""))
        async with run:
            await run.finished(timeout=30)  # no EndFrame sent: the service ended the run
        errors = [f for f in run.upstream() if isinstance(f, ErrorFrame)]
        assert errors, "no ErrorFrame reached the top of the pipeline"
        print(errors[0].error)
        assert "refused" in errors[0].error and "token" in errors[0].error.lower()
        assert await active_sessions_with_token(locked.target, "right") == 0


async def active_sessions_with_token(target: str, token: str) -> int:
    async with AsyncAvatarClient(target, token) as client:
        return (await client.node_info()).active_sessions


async def test_tls_node_serves_the_pipeline(tmp_path, photo: bytes) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path)
    config = NodeConfig(port=0, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), engines=["testcard"])
    with start_background_node(config) as tls_node:
        target = tls_node.target.replace("127.0.0.1", "localhost")  # the name in the certificate
        address = NodeAddress(target, credentials=tls_credentials(ca=pki.ca))
        async with AvatarPipeline(on_node(photo, address)) as run:
            await run.until(lambda: len(run.frames()) >= 10)
            assert run.avatar.feed is not None and run.avatar.feed.connected
            await run.end()
        assert all(f.picture is not None and f.picture.shape == (H, W, 3) for f in run.frames())


async def test_a_node_restart_mid_session_keeps_idle_video_flowing_and_the_session_comes_back(
    photo: bytes, short_speech: Speech
) -> None:
    port = free_port()
    node: NodeProcess | None = await asyncio.to_thread(loopback_node, port)
    try:
        assert node is not None
        address = NodeAddress(node.target, retry_min_s=0.2, retry_max_s=0.5)
        async with AvatarPipeline(on_node(photo, address, engine="")) as run:
            await run.until(lambda: len(run.frames()) >= 10)
            node.kill()
            killed_at = len(run.frames())
            await run.until(lambda: len(run.frames()) >= killed_at + 25)  # the node is away: idle goes on
            node = await asyncio.to_thread(loopback_node, port)
            assert run.avatar.feed is not None
            await run.until(lambda: run.avatar.feed is not None and run.avatar.feed.connected)
            back_at = len(run.frames())
            await run.say(short_speech)
            await run.until(lambda: run.finished_turns() >= 1)
            await run.end()
        frames = run.frames()
        assert np.allclose(np.diff([f.pts for f in frames]), 1e9 / FPS, atol=1e6), "the timeline broke"
        away = frames[killed_at : killed_at + 25]
        assert all(f.picture is not None and not np.any(f.audio) for f in away), "no idle picture while away"
        assert sum(f.speech for f in frames[back_at:]) >= short_speech.seconds * FPS - 2, "speech after the restart"
    finally:
        if node is not None:
            node.close()
