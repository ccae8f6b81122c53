"""Live timing: bounded lag when the engine is too slow, no gaps at 1x, honest lag figures."""

from __future__ import annotations

import asyncio
import math
import os

import grpc
import numpy as np
import pytest

from avatar_client.errors import AvatarError
from avatar_node.engines.testcard import TestCardEngine
from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb

from ..support.node_process import NodeProcess
from .conftest import Call, channel, start_event, tone

FRAME_S = 0.04


def _steady_tone(seconds: float) -> bytes:
    """A voiced-like tone with no silent troughs, so any gap in the audio is the node's."""
    t = np.arange(int(seconds * 16000)) / 16000
    signal = sum(np.sin(2 * np.pi * 220 * h * t) / h for h in range(1, 6)) + 0.3
    return (signal / np.abs(signal).max() * 8000).astype(np.int16).tobytes()


def _client_lags(arrivals: list[tuple[int, float]]) -> np.ndarray:
    """How late each frame arrived against the schedule the first frame set (client's view)."""
    first_index, first_time = arrivals[0]
    return np.array([t - first_time - (k - first_index) * FRAME_S for k, t in arrivals])


async def _read_frames(call: Call, arrivals: list[tuple[int, float]]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        event = await call.call.read()  # type: ignore[attr-defined]
        if event is grpc.aio.EOF:
            return
        call.received.append(event)
        if event.WhichOneof("event") == "video":
            arrivals.append((event.video.frame_index, loop.time()))


@pytest.mark.slow
async def test_a_slow_engine_repeats_frames_instead_of_sliding_behind(photo):
    engine = TestCardEngine(step_delay_ms=65)  # 0.6x real time
    with start_background_node(NodeConfig(port=0, engines=[engine], max_sessions=4, text_to_speech=False)) as node:
        async with channel(node.target) as stub:
            call = Call(stub)
            call.send(**start_event(photo, stats_interval_ms=500))
            call.send(speech_audio=pb.SpeechAudio(pcm=_steady_tone(8.0), sample_rate=16000, end_of_turn=True))
            call.open()
            arrivals: list[tuple[int, float]] = []
            reader = asyncio.create_task(_read_frames(call, arrivals))
            await asyncio.sleep(4.0)
            # While it cannot keep up, it is told so, and the node takes no new live session.
            notices = [n for n in call.of("notice") if n.code == pb.NOTICE_CODE_FALLING_BEHIND]
            assert notices, "no falling-behind notice"
            other = Call(stub)
            other.send(**start_event(photo))
            other.open()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await other.read_all(timeout=10)
            assert AvatarError.from_rpc_error(refused.value).reason == "NODE_OVERLOADED"
            during = len(arrivals)
            engine.step_delay_s = 0.0  # the slowdown ends
            await asyncio.sleep(3.0)
            call.send(end=pb.EndSession(discard_pending=True))
            call.close()
            await asyncio.wait_for(reader, 20)
    stats = call.of("stats")[-1]
    lags = _client_lags(arrivals)
    assert lags.max() < 0.3, f"a frame arrived {lags.max() * 1000:.0f} ms behind schedule"
    assert stats.max_lag_ms < 250 and abs(stats.max_lag_ms / 1000 - lags.max()) < 0.08, (stats.max_lag_ms, lags.max())
    assert stats.frames_skipped > 20
    videos = call.of("video")
    indices = [v.frame_index for v in videos]
    assert indices == list(range(indices[0], indices[0] + len(indices))), "a frame went missing"
    repeated = [v.repeated for v in videos]
    after = repeated[during + 25 :]
    assert any(repeated[:during]), "nothing was repeated while the engine was slow"
    assert sum(after) <= 0.05 * len(after), f"it did not recover: {sum(after)} of {len(after)} repeated"
    assert np.percentile(lags[during + 25 :], 95) < 0.08
    # The sound never gaps while frames are repeated: no run of silence inside the speech.
    speech = np.frombuffer(b"".join(a.pcm for a in call.of("audio")), np.int16)
    voiced = np.flatnonzero(speech)
    silent_runs = np.diff(voiced)
    assert silent_runs.max() < 0.005 * 48000, f"a {silent_runs.max() / 48:.0f} ms gap in the speech"
    finished = [t for t in call.of("turn") if t.kind == pb.TurnEvent.KIND_FINISHED][0]
    assert (voiced[-1] - voiced[0]) / 48 == pytest.approx(finished.played_ms, abs=45)


@pytest.mark.slow
async def test_speech_streamed_at_one_x_plays_without_gaps(photo):
    """20 ms and 100 ms chunks at exactly real time, two sessions at once, for a minute
    (AVATAR_TEST_STREAM_SECONDS runs it longer)."""
    node = NodeProcess("--max-sessions", "4")
    seconds = float(os.environ.get("AVATAR_TEST_STREAM_SECONDS", "60"))
    speech = tone(seconds)
    try:
        async with channel(node.target) as stub:

            async def stream(chunk_ms: int) -> tuple[Call, list[tuple[int, float]]]:
                call = Call(stub)
                call.send(**start_event(photo))
                call.open()
                arrivals: list[tuple[int, float]] = []
                reader = asyncio.create_task(_read_frames(call, arrivals))
                await asyncio.sleep(0.5)
                loop = asyncio.get_running_loop()
                chunk = 16 * chunk_ms
                t0 = loop.time()
                for i in range(0, len(speech), chunk):
                    await asyncio.sleep(max(0.0, t0 + i / 16000 - loop.time()))
                    call.send(speech_audio=pb.SpeechAudio(pcm=speech[i : i + chunk].tobytes(), sample_rate=16000))
                    if i and i % (16000 * 12) == 0:  # a new turn every 12 s, from idle
                        call.send(speech_audio=pb.SpeechAudio(sample_rate=16000, end_of_turn=True))
                        await asyncio.sleep(0.6)
                        t0 += 0.6
                call.send(speech_audio=pb.SpeechAudio(sample_rate=16000, end_of_turn=True))
                call.send(end=pb.EndSession())
                call.close()
                await asyncio.wait_for(reader, 30)
                return call, arrivals

            results = await asyncio.gather(stream(20), stream(100))
        assert node.terminate() == 0
    finally:
        node.terminate()
    node.assert_clean_log()
    for call, arrivals in results:
        stats = call.of("stats")[-1]
        assert stats.speech_underruns == 0, stats
        assert stats.frames_dropped == 0
        lags = _client_lags(arrivals)
        assert abs(stats.max_lag_ms / 1000 - lags.max()) < 0.06, (stats.max_lag_ms, lags.max())
        finished = [t for t in call.of("turn") if t.kind == pb.TurnEvent.KIND_FINISHED]
        assert len(finished) == math.ceil(seconds / 12)
        assert sum(t.played_ms for t in finished) == pytest.approx(seconds * 1000, abs=60)
