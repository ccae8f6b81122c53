"""SDK edges: closing a session that already ended, and the README's SDK examples, run as written."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from avatar_client import AsyncAvatarClient, AvatarClient

from avatar_node.server import NodeConfig, start_background_node

from .certs import make_pki

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def node():
    with start_background_node(NodeConfig(port=0, max_sessions=4)) as running:
        yield running


def test_aclose_after_ended_lets_the_call_finish_ok(node, photo):
    async def scenario() -> tuple[grpc.StatusCode, grpc.StatusCode]:
        async with AsyncAvatarClient(node.target) as client:
            session = await client.start_session(image=photo, mode="render", width=320, height=240)
            await session.say("Hi.")
            await session.end()
            async for _ in session.events():
                pass
            assert session.ended is not None
            await session.aclose()  # right after `ended`: the status has not arrived yet
            return await session._call.code(), grpc.StatusCode.OK

    code, expected = asyncio.run(scenario())
    assert code == expected  # not CANCELLED ("Locally cancelled by application!")
    ended = node.server.runtime.ended
    assert ended["end_requested"] >= 1 and ended["client_cancelled"] == 0


def test_aclose_before_ended_still_cancels(node, photo):
    async def scenario() -> grpc.StatusCode:
        async with AsyncAvatarClient(node.target) as client:
            session = await client.start_session(image=photo, mode="live", width=320, height=240)
            await session.aclose()
            return await session._call.code()

    assert asyncio.run(scenario()) == grpc.StatusCode.CANCELLED


def test_sync_client_closes_an_ended_session_cleanly(node, photo):
    with AvatarClient(node.target) as client:
        with client.start_session(image=photo, mode="render", width=320, height=240) as session:
            session.say("Hi.")
            session.end()
            kinds = [type(event).__name__ for event in session.events()]
        assert kinds[-1] == "Ended"


def readme_sdk_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Python SDK", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_sdk_examples():
    examples = readme_sdk_examples()
    assert len(examples) >= 3
    assert any('mode="render"' in e and "session.end()" in e for e in examples)


@pytest.mark.parametrize("index", range(len(readme_sdk_examples())))
def test_readme_sdk_example_runs(index, node, photo, tmp_path: Path):
    """Each example as a user would run it: its own process, `me.jpg` in the folder, the node
    at the address the README names (here: a node on a free port)."""
    code = readme_sdk_examples()[index].replace("localhost:50051", node.target)
    (tmp_path / "me.jpg").write_bytes(photo)
    make_pki(tmp_path)  # ca.pem, client.pem, client.key for the TLS example
    env = {**os.environ, "AVATAR_TOKEN": "token-from-the-environment"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for written in re.findall(r'"([\w-]+\.mp4)"', code):
        assert (tmp_path / written).stat().st_size > 1000
