"""The whole recipe from the command line: teacher (tiny, random) -> trajectories -> stage 1
-> stage 2 -> export; `avatar-node check-weights` accepts the result and a node serves it
over gRPC with `--engine livetalk`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from avatar_node.server import NodeConfig, start_background_node
from avatar_proto import avatar_pb2 as pb
from avatar_train.cli import main
from tests.node.conftest import Call, channel, tone
from tests.train.helpers import tiny_config

pytestmark = pytest.mark.slow


async def test_teacher_to_served_student(world, tmp_path, photo):
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    ode = tiny_config("ode", ode=replace(tiny_config().ode, steps=4))
    (tmp_path / "ode.json").write_text(json.dumps(ode.to_json()))
    dmd = tiny_config("dmd")
    (tmp_path / "dmd.json").write_text(json.dumps(dmd.to_json()))
    teacher = str(world.dit_file)
    assert main(["trajectories", str(data), "--teacher", teacher, "--config", str(tmp_path / "ode.json")]) == 0
    assert main(["train", "--config", str(tmp_path / "ode.json"), "--data", str(data), "--out", str(tmp_path / "s1"),
                 "--init", teacher, "--trajectories", str(data)]) == 0
    assert main(["train", "--config", str(tmp_path / "dmd.json"), "--data", str(data), "--out", str(tmp_path / "s2"),
                 "--init", str(tmp_path / "s1" / "student.safetensors"), "--teacher", teacher, "--steps", "2"]) == 0
    out = tmp_path / "served"
    assert main(["export", str(tmp_path / "s2" / "student.safetensors"), "--base", str(world.weights),
                 "--config", str(tmp_path / "dmd.json"), str(out)]) == 0

    checked = subprocess.run([sys.executable, "-m", "avatar_node.cli", "check-weights", str(out)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    config = NodeConfig(port=0, engines=["livetalk"], weights_dir=str(out), max_sessions=1)
    with start_background_node(config) as node:
        async with channel(node.target) as stub:
            call = Call(stub)
            call.send(start=pb.StartSession(image=photo, engine="livetalk", mode=pb.SESSION_MODE_RENDER,
                                            output=pb.OutputFormat(width=160, height=160)))
            call.send(speech_audio=pb.SpeechAudio(pcm=tone(1.0).tobytes(), sample_rate=16000, end_of_turn=True))
            call.send(end=pb.EndSession())
            call.open()
            await call.read_all()
    videos = call.of("video")
    assert call.of("ready")[0].engine == "livetalk" and len(videos) >= 16


@pytest.fixture(scope="module")
def photo() -> bytes:
    from importlib import resources

    return resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()
