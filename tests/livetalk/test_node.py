"""The diffusion engine served by a real node over gRPC (tiny random weights, CPU): the same clock,
protocol and barge-in as the CPU engine."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import av
import numpy as np
import pytest

from avatar_node.engines.livetalk.tiny import make_tiny_weights
from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb
from tests.node.conftest import Call, channel, tone

FPS = 16
TICKS = 48000 // FPS


@pytest.fixture(scope="module")
def livetalk_node(tmp_path_factory):
    weights = make_tiny_weights(tmp_path_factory.mktemp("tiny-livetalk"))
    config = NodeConfig(port=0, engines=["portrait", "livetalk"], weights_dir=str(weights), max_sessions=4)
    with start_background_node(config) as node:
        yield node


def _start(photo: bytes, live: bool) -> dict:
    return dict(start=pb.StartSession(
        image=photo, engine="livetalk", mode=pb.SESSION_MODE_LIVE if live else pb.SESSION_MODE_RENDER,
        output=pb.OutputFormat(width=320, height=240)))


def _check_stream(call: Call) -> list[np.ndarray]:
    ready = call.of("ready")[0]
    assert ready.engine == "livetalk" and ready.output.fps == FPS and ready.clock_rate == 48000
    videos, audios = call.of("video"), call.of("audio")
    assert [v.pts for v in videos] == [a.pts for a in audios] == [v.frame_index * TICKS for v in videos]
    assert all(len(a.pcm) == 2 * TICKS for a in audios)
    codec = av.CodecContext.create("h264", "r")
    frames = [f.to_ndarray(format="rgb24") for v in videos for f in codec.decode(av.Packet(v.data))]
    assert len(frames) == len(videos) and frames[0].shape == (240, 320, 3)
    return frames


async def test_render_lasts_as_long_as_the_speech(livetalk_node, photo):
    async with channel(livetalk_node.target) as stub:
        call = Call(stub)
        call.send(**_start(photo, live=False))
        call.send(speech_audio=pb.SpeechAudio(pcm=tone(2.0).tobytes(), sample_rate=16000, end_of_turn=True))
        call.send(end=pb.EndSession())
        call.close()
        call.open()
        await call.read_all(timeout=120)
    _check_stream(call)
    seconds = len(call.of("video")) / FPS
    assert 2.0 - 0.1 <= seconds <= 2.0 + 0.75 + 0.1, seconds  # the speech, within one block
    finished = [t for t in call.of("turn") if t.kind == pb.TurnEvent.KIND_FINISHED][0]
    assert not finished.interrupted and abs(finished.played_ms - 2000) <= 1


async def test_live_barge_in_stops_at_once_and_reports_what_played(livetalk_node, photo):
    async with channel(livetalk_node.target) as stub:
        call = Call(stub)
        call.send(**_start(photo, live=True))
        call.send(speech_audio=pb.SpeechAudio(pcm=tone(6.0).tobytes(), sample_rate=16000, end_of_turn=True))
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.speaking
                              and e.video.frame_index >= 20, timeout=60)
        call.send(control=pb.Control(interrupt=pb.Interrupt()))
        finished = await call.read_until(lambda e: e.WhichOneof("event") == "turn"
                                         and e.turn.kind == pb.TurnEvent.KIND_FINISHED, timeout=30)
        last = call.of("video")[-1].frame_index
        await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.frame_index > last + 24,
                              timeout=60)
        call.send(end=pb.EndSession())
        call.close()
        await call.read_all(timeout=60)
    _check_stream(call)
    videos = call.of("video")
    speaking = [v for v in videos if v.speaking]
    assert finished.turn.interrupted
    assert abs(finished.turn.played_ms - len(speaking) * 1000 // FPS) <= 1000 // FPS
    heard = {a.pts: np.frombuffer(a.pcm, np.int16) for a in call.of("audio")}
    after = [v for v in videos if v.frame_index > speaking[-1].frame_index]
    assert len(after) > 24 and not any(heard[v.pts].any() for v in after), "speech after the barge-in"


def test_make_tiny_weights_and_check_weights_from_the_command_line(tmp_path):
    run = [sys.executable, "-m", "avatar_node.cli"]
    made = subprocess.run([*run, "make-tiny-weights", str(tmp_path / "w")], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    checked = subprocess.run([*run, "check-weights", str(tmp_path / "w")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    missing = subprocess.run([*run, "serve", "--engine", "livetalk", "--port", "0"], capture_output=True, text=True)
    assert missing.returncode == 2 and "--weights DIR" in missing.stderr


async def test_a_rate_the_engine_cannot_render_is_refused_clearly(livetalk_node, photo):
    import grpc

    async with channel(livetalk_node.target) as stub:
        call = Call(stub)
        call.send(start=pb.StartSession(image=photo, engine="livetalk", output=pb.OutputFormat(fps=25)))
        call.open()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read_all(timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "16 fps" in info.value.details()
    await asyncio.sleep(0)
