"""Driving a running `avatar cam`: another program through CamControl (say, speak, interrupt,
status), and the keys in its terminal."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from avatar_client.virtualcam import CamControl, CamError

from .conftest import MicReader, rms_db, speech_clip
from .test_virtual_mic import assert_mic_gone, mic_names

LONG_TEXT = (
    "This is a long announcement that goes on for a while, so that there is plenty of time "
    "to interrupt it before it reaches the end of its many words."
)


def test_an_agent_says_text_and_reads_status_and_turns(node, start_cam, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    cam = start_cam("--target", node.target, "--no-mic", "--name", "agent", "--size", "320x240")
    cam.wait_for("connected: 127.0.0.1")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    control_file = tmp_path / "avatar-cam" / "agent.json"
    assert oct(control_file.stat().st_mode & 0o777) == "0o600"

    async def drive() -> tuple[dict, dict, list[dict]]:  # type: ignore[type-arg]
        async with await CamControl.connect("agent") as control:
            turn_id = await control.say("Hello from the agent.")
            finished = await control.wait_finished(turn_id, timeout=30)
            status = await control.status()
            events = []
            while not control.events.empty():
                events.append(control.events.get_nowait())
            return finished, status, events

    finished, status, events = asyncio.run(drive())
    assert not finished["interrupted"] and finished["played_ms"] > 500, finished
    assert [e["kind"] for e in events if e["turn_id"] == finished["turn_id"]] == ["started", "finished"]
    assert status["connection"] == "connected" and 24 <= status["camera_fps"] <= 26, status
    assert status["node_latency_ms"] is not None and 0 < status["node_latency_ms"] < 5000, status

    # Only the owner of the token gets in.
    async def intrude() -> str:
        info = json.loads(control_file.read_text())
        reader, writer = await asyncio.open_connection(info["host"], info["port"])
        writer.write(b'{"token": "guess"}\n{"id": 1, "op": "say", "text": "hijacked"}\n')
        reply = await reader.readline()
        writer.close()
        return reply.decode()

    assert "wrong token" in asyncio.run(intrude())
    assert cam.stop(signal.SIGTERM) == 0, cam.output()
    assert not control_file.exists()
    with pytest.raises(CamError, match="no `avatar cam --name agent` is running"):
        asyncio.run(CamControl.connect("agent"))


def test_interrupt_from_an_agent_silences_the_microphone(pulse, node, start_cam, monkeypatch):  # type: ignore[no-untyped-def]
    name = "barge"
    cam = start_cam("--target", node.target, "--no-camera", "--name", name, "--size", "320x240", pulse=pulse)
    cam.wait_for("connected: 127.0.0.1")
    reader = MicReader(pulse, mic_names(name)[1])
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(pulse.runtime_dir))

    async def barge_in() -> tuple[dict, float]:  # type: ignore[type-arg]
        async with await CamControl.connect(name) as control:
            turn_id = await control.say(LONG_TEXT)
            await asyncio.sleep(2.5)
            interrupted_at = time.monotonic()
            await control.interrupt()
            return await control.wait_finished(turn_id, timeout=10), interrupted_at

    try:
        finished, interrupted_at = asyncio.run(barge_in())
        time.sleep(1.0)
    finally:
        assert cam.stop(signal.SIGTERM) == 0, cam.output()
        recording, t0 = reader.stop()
    assert finished["interrupted"] and 500 < finished["played_ms"] < 4000, finished
    level = [rms_db(recording[i : i + 960]) for i in range(0, len(recording) - 960, 960)]  # 20 ms steps
    loud = [t0 + i * 0.02 for i, db in enumerate(level) if db > -40]
    assert loud, "the avatar never spoke"
    went_quiet = max(loud) - interrupted_at
    print(f"speech stopped {went_quiet * 1000:.0f} ms after the interrupt")
    assert 0 < went_quiet < 0.4, went_quiet
    assert_mic_gone(pulse, name)


def test_keys_in_the_terminal_interrupt_and_quit(node, start_cam, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    cam = start_cam("--target", node.target, "--no-mic", "--name", "keys", "--size", "320x240", terminal=True)
    cam.wait_for("keys: i = interrupt the avatar, q = quit")
    cam.wait_for("connected: 127.0.0.1")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))

    async def say_then_press_i() -> dict:  # type: ignore[type-arg]
        async with await CamControl.connect("keys") as control:
            turn_id = await control.say(LONG_TEXT)
            await asyncio.sleep(2.0)
            cam.press("i")
            return await control.wait_finished(turn_id, timeout=10)

    finished = asyncio.run(say_then_press_i())
    assert finished["interrupted"], finished
    cam.wait_for("interrupted")
    cam.press("q")
    assert cam.wait(20) == 0, cam.output()


def test_speech_streamed_in_pieces_is_one_turn(node, start_cam, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    cam = start_cam("--target", node.target, "--no-mic", "--name", "stream", "--size", "320x240")
    cam.wait_for("connected: 127.0.0.1")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    samples, rate = speech_clip("Streaming speech arrives in pieces from the agent's own voice.")
    pieces = np.array_split(samples, 4)

    async def stream() -> dict:  # type: ignore[type-arg]
        async with await CamControl.connect("stream") as control:
            turn_id = await control.speak(pieces[0], rate, end_of_turn=False)
            for k, piece in enumerate(pieces[1:], start=1):
                assert await control.speak(piece, rate, end_of_turn=k == 3, turn_id=turn_id) == turn_id
            return await control.wait_finished(turn_id, timeout=30)

    finished = asyncio.run(stream())
    assert abs(finished["played_ms"] - 1000 * len(samples) / rate) < 60, finished
    assert cam.stop(signal.SIGTERM) == 0


class _Writer:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


async def test_a_turn_that_finishes_before_it_is_waited_for_is_still_reported():
    """An interrupt (or a short text) can finish a turn before its caller waits for it, even
    before `say` has returned its id; the event must not be lost."""
    reader = asyncio.StreamReader()
    control = CamControl(reader, _Writer())  # type: ignore[arg-type]
    finished = {"event": "turn", "kind": "finished", "turn_id": "t1", "interrupted": True, "played_ms": 480}
    reply = {"id": 1, "ok": True, "turn_id": "t1"}
    reader.feed_data((json.dumps(reply) + "\n" + json.dumps(finished) + "\n").encode())
    turn_id = await control.say("hello")
    await asyncio.sleep(0.01)
    assert await control.wait_finished(turn_id, timeout=1) == finished
    await control.aclose()
