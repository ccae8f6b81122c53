"""SIGTERM drains as documented: refuse new work, finish queued speech, end with NODE_SHUTDOWN, exit 0."""

from __future__ import annotations

import asyncio
import signal

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatar_client.errors import AvatarError
from avatar_proto import avatar_pb2 as pb

from ..support.node_process import NodeProcess
from .conftest import Call, channel, start_event, tone

SERVICE = pb.DESCRIPTOR.services_by_name["AvatarNode"].full_name


async def _readiness(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE))
        return reply.status


@pytest.mark.slow
async def test_sigterm_lets_running_sessions_finish_their_speech(photo):
    node = NodeProcess("--max-sessions", "4", "--grace", "20")
    try:
        async with channel(node.target) as stub:
            idle = Call(stub)
            idle.send(**start_event(photo))
            idle.open()
            streaming = Call(stub)
            streaming.send(**start_event(photo))
            streaming.open()
            await idle.read_until(lambda e: e.WhichOneof("event") == "video")
            await streaming.read_until(lambda e: e.WhichOneof("event") == "video")
            assert await _readiness(node.target) == health_pb2.HealthCheckResponse.SERVING

            speech = tone(3.0)
            chunk = 320  # 20 ms at 16 kHz, sent at 1x
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reading = asyncio.create_task(streaming.read_all(timeout=30))
            for n, i in enumerate(range(0, len(speech), chunk)):
                if n == 50:  # one second into the turn, the node is told to stop
                    node.proc.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.05)
                    assert await _readiness(node.target) == health_pb2.HealthCheckResponse.NOT_SERVING
                    late = Call(stub)
                    late.send(**start_event(photo))
                    late.open()
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await late.read_all(timeout=10)
                    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert AvatarError.from_rpc_error(refused.value).reason == "NODE_DRAINING"
                await asyncio.sleep(max(0.0, t0 + n * 0.02 - loop.time()))
                streaming.send(speech_audio=pb.SpeechAudio(pcm=speech[i : i + chunk].tobytes(), sample_rate=16000))
            streaming.send(speech_audio=pb.SpeechAudio(sample_rate=16000, end_of_turn=True))
            await reading  # no error: the open turn was taken to its end
            idle_events = await idle.read_all(timeout=10)
        assert node.proc.wait(30) == 0
    finally:
        node.terminate()
    node.assert_clean_log()

    ended = idle.of("ended")[0]
    assert ended.reason == pb.END_REASON_NODE_SHUTDOWN
    assert any(e.WhichOneof("event") == "notice" and e.notice.code == pb.NOTICE_CODE_DRAINING for e in idle_events)
    ended = streaming.of("ended")[0]
    assert ended.reason == pb.END_REASON_NODE_SHUTDOWN
    finished = [t for t in streaming.of("turn") if t.kind == pb.TurnEvent.KIND_FINISHED]
    assert len(finished) == 1 and not finished[0].interrupted
    assert finished[0].played_ms == finished[0].duration_ms == 3000, finished[0].played_ms  # late audio delays, never loses
    heard = np.frombuffer(b"".join(a.pcm for a in streaming.of("audio")), np.int16)
    assert np.count_nonzero(heard) >= 0.95 * 3 * 48000


@pytest.mark.slow
async def test_grace_period_ends_long_speech(photo):
    node = NodeProcess("--max-sessions", "2", "--grace", "1")
    try:
        async with channel(node.target) as stub:
            call = Call(stub)
            call.send(**start_event(photo))
            call.send(speech_audio=pb.SpeechAudio(pcm=tone(30.0).tobytes(), sample_rate=16000, end_of_turn=True))
            call.open()
            await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.speaking)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            node.proc.send_signal(signal.SIGTERM)
            await call.read_all(timeout=15)
            took = loop.time() - t0
        assert node.proc.wait(30) == 0
    finally:
        node.terminate()
    node.assert_clean_log()
    assert 0.9 <= took <= 4.0, took
    assert call.of("ended")[0].reason == pb.END_REASON_NODE_SHUTDOWN
    finished = [t for t in call.of("turn") if t.kind == pb.TurnEvent.KIND_FINISHED]
    assert finished and finished[0].interrupted
