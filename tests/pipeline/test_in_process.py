"""A whole session in process, with no gRPC server: the pipeline as a library."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np

from avatar_node.pipeline import AvatarRuntime, EndReason, SessionOptions, TurnKind

from .conftest import check_one_clock, collect, tone


async def test_render_session_in_process_like_the_readme(photo):
    async with AvatarRuntime(["portrait"]) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(live=False, width=320, height=240, video="both"))
        await stream.say("Hello, I am your avatar.", turn_id="hi")
        await stream.end()
        received = await collect(stream)
        await stream.aclose()
        assert runtime.admission.active == 0 and not runtime.streams
    frames = received.frames
    check_one_clock(frames)
    assert [(t.turn_id, t.kind) for t in received.turns] == [
        ("hi", TurnKind.QUEUED), ("hi", TurnKind.STARTED), ("hi", TurnKind.FINISHED)
    ]
    finished = received.turns[-1]
    assert not finished.interrupted and finished.played_ms == finished.duration_ms > 500
    assert abs(len(frames) * 40 - finished.duration_ms) <= 40
    assert frames[0].image is not None and frames[0].image.shape == (240, 320, 3)
    assert frames[0].encoded is not None and frames[0].keyframe
    assert np.abs(received.audio()).max() > 1000
    assert received.ended is not None and received.ended.reason is EndReason.END_REQUESTED
    assert received.ended.frames == len(frames)


async def test_raw_frames_without_encoding(photo):
    async with AvatarRuntime(["testcard"], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(live=False, video="rgb"))
        assert stream.encoder is None
        await stream.push_speech(tone(0.4), 16000, end_of_turn=True)
        await stream.end()
        received = await collect(stream)
        await stream.aclose()
    assert len(received.frames) == 10
    assert all(f.encoded is None and f.image is not None for f in received.frames)
    check_one_clock(received.frames)


async def test_live_idle_runs_at_one_x(photo):
    async with AvatarRuntime(["testcard"], text_to_speech=False) as runtime:
        stream = await runtime.open_stream(photo, SessionOptions(video="rgb"))
        reader = asyncio.create_task(collect(stream))
        await asyncio.sleep(1.2)
        await stream.end()
        received = await reader
        await stream.aclose()
    frames, arrivals = received.frames, received.arrivals
    rate = (len(frames) - 1) / (arrivals[-1] - arrivals[0])
    assert 23.5 <= rate <= 26.5, rate
    assert not any(f.speaking for f in frames) and not any(np.any(f.audio) for f in frames)
    check_one_clock(frames)


def test_the_pipeline_imports_no_transport():
    code = (
        "import sys, avatar_node.pipeline\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'avatar_proto', 'google')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_pipeline_example_runs_as_written():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### The pipeline, without gRPC", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) > 20 and "(480, 848, 3)" in lines[0] and lines[0].endswith("True")
