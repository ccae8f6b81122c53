"""Against a real LiveKit server, when one is configured: the plugin in node mode dispatches a real
`avatar-livekit worker`, which joins, publishes the avatar's video and answers the agent.

Runs when LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are set (for example
`livekit-server --dev`: ws://127.0.0.1:7880, devkey, secret); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time

import pytest

NEEDED = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
pytestmark = [
    pytest.mark.skipif(not all(os.environ.get(n) for n in NEEDED),
                       reason="no LiveKit server: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET to run"),
    pytest.mark.timeout(120),
]


async def test_node_mode_against_a_real_server(photo: bytes, short_speech) -> None:
    from livekit import api, rtc
    from livekit.agents import Agent, AgentSession
    from livekit.agents.testing import fake_job_context

    from avatar_livekit import AvatarSession
    from avatar_node.server import NodeConfig, start_background_node

    url, key, secret = (os.environ[n] for n in NEEDED)
    room_name = f"avatar-test-{secrets.token_hex(4)}"
    agent_name = f"avatar-node-test-{secrets.token_hex(4)}"
    with start_background_node(NodeConfig(port=0, engines=["testcard"], text_to_speech=False)) as node:
        worker = subprocess.Popen([sys.executable, "-m", "avatar_livekit.cli", "worker", "--node", node.target,
                                   "--agent-name", agent_name])
        room = rtc.Room()
        try:
            token = (api.AccessToken(key, secret).with_identity("agent-under-test").with_kind("agent")
                     .with_grants(api.VideoGrants(room_join=True, room=room_name)).to_jwt())
            await room.connect(url, token)
            with fake_job_context(room=room, agent_identity="agent-under-test"):
                session = AgentSession()
                avatar = AvatarSession(mode="node", image=photo, engine="testcard", worker_name=agent_name)
                await avatar.start(session, room=room)
                finished = []
                await session.start(agent=Agent(instructions="test"), room=room)
                session.output.audio.on("playback_finished", finished.append)
                await avatar.wait_for_join(timeout=60)
                started = time.monotonic()
                await session.say("Hello", audio=short_speech.frames())
                assert finished and not finished[0].interrupted
                assert abs(finished[0].playback_position - short_speech.seconds) < 0.1
                assert time.monotonic() - started < short_speech.seconds + 5
                await session.aclose()
                await avatar.aclose()
        finally:
            await room.disconnect()
            worker.terminate()
            worker.wait(30)
            await asyncio.sleep(0)
