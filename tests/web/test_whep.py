"""The WHEP endpoint for any player, its security and its limits: an aiortc client watches the
avatar; the token is enforced; uploads are size-checked; web sessions share the node's session
limit, admission and drain with gRPC; every path returns the session's slot."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from avatar_node.pipeline import SessionOptions
from avatar_node.web.server import MAX_UPLOAD_BYTES
from avatar_node.web.session import SessionLimits, WebSession

from .conftest import (
    H,
    W,
    Chromium,
    WhepViewer,
    http,
    likeness,
    node_sessions,
    open_page,
    start_node,
    wait_for,
    wait_playing,
)
from ..support.waits import until

TOKEN = "s3cret-token"


async def test_an_aiortc_whep_client_watches_the_avatar_and_hears_it(reference_small):
    with start_node() as node:
        viewer = WhepViewer(node.web_url)
        status, answer = await viewer.start()
        assert status == 201 and answer.startswith("v=0"), (status, answer[:200])
        assert viewer.resource and viewer.resource.startswith("/whep/")
        await until(lambda: len(viewer.video) > 25, 20, "a second of video")
        picture = viewer.video[-1].to_ndarray(format="rgb24")
        assert picture.shape == (H, W, 3)
        small = np.asarray(Image.fromarray(picture).resize((128, 72), Image.Resampling.BILINEAR))
        assert likeness(small, reference_small) > 0.8
        status, _ = await viewer.request("POST", viewer.resource + "/control", {"action": "say", "text": "Hello there!"})
        assert status == 200
        heard = len(viewer.audio)
        await until(lambda: any(np.abs(f.to_ndarray()).max() > 3000 for f in viewer.audio[heard:]), 15, "speech")
        status, stats = await viewer.request("GET", viewer.resource + "/stats")
        assert status == 200 and stats["fps"] > 10 and stats["node"]["active_sessions"] == 1
        assert await viewer.delete() == 200
        await until(lambda: node_sessions(node) == (0, 0), 5, "the session to end after DELETE")
        assert (await viewer.request("GET", viewer.resource + "/stats"))[0] == 404
        await viewer.close()


async def test_the_token_is_enforced_on_whep_and_the_api():
    with start_node(auth_token=TOKEN) as node:
        for token in (None, "wrong"):
            viewer = WhepViewer(node.web_url, token)
            status, body = await viewer.start()
            assert status == 401 and json.loads(body)["error"] == "BAD_TOKEN"
            await viewer.close()
            assert (await viewer.request("GET", "/api/info"))[0] == 401
            assert (await viewer.request("POST", "/api/avatars"))[0] == 401
        assert node_sessions(node) == (0, 0) and node.server.runtime.started == 0
        # The page itself loads (it holds nothing) and asks for the token.
        status, _, page = http("GET", node.web_url)
        assert status == 200 and b'id="login"' in page
        viewer = WhepViewer(node.web_url, TOKEN)
        assert (await viewer.start())[0] == 201
        assert await viewer.delete() == 200
        await viewer.close()


async def test_a_session_cannot_be_ended_read_or_driven_without_the_token():
    with start_node(auth_token=TOKEN) as node:
        viewer = WhepViewer(node.web_url, TOKEN)
        assert (await viewer.start())[0] == 201
        resource = viewer.resource
        assert resource is not None
        for token in (None, "wrong"):
            stranger = WhepViewer(node.web_url, token)
            stranger.resource = resource
            assert await stranger.delete() == 401
            status, body = await stranger.request("POST", resource + "/control", {"action": "interrupt"})
            assert status == 401 and body["error"] == "BAD_TOKEN"
            assert (await stranger.request("GET", resource + "/stats"))[0] == 401
            await stranger.close()
        assert node_sessions(node) == (1, 1), "a request without the token touched the session"
        assert (await viewer.request("GET", resource + "/stats"))[0] == 200
        assert await viewer.delete() == 200
        await until(lambda: node_sessions(node) == (0, 0), 5, "the session to end after DELETE")
        await viewer.close()


def test_the_page_asks_for_the_token_and_works_once_signed_in(browser):
    with start_node(auth_token=TOKEN) as node:
        page, _ = open_page(browser, node.web_url + f"?size={W}x{H}")
        page.wait("!document.getElementById('login').hidden", 10, "the login prompt")
        page.evaluate("avatarPage.start()")  # without the token nothing starts
        assert node_sessions(node) == (0, 0)
        page.evaluate(f"document.getElementById('token').value = {TOKEN!r}; "
                      "document.querySelector('#login button').click(); true")
        page.wait("document.getElementById('login').hidden", 10, "the page to accept the token")
        page.evaluate("document.getElementById('start').click(); true")
        wait_playing(page)
        assert node_sessions(node) == (1, 1)
        page.evaluate("avatarPage.stop()")
        wait_for(lambda: node_sessions(node) == (0, 0), 5, "Stop to end the session")


async def test_uploads_are_size_checked_and_a_prepared_avatar_can_be_watched(photo):
    with start_node() as node:
        viewer = WhepViewer(node.web_url)
        status, _, body = await asyncio.to_thread(http, "POST", node.web_url + "api/avatars",
                                                  b"\xff" * (MAX_UPLOAD_BYTES + 1), {"Content-Type": "image/jpeg"})
        assert status == 413 and json.loads(body)["error"] == "IMAGE_TOO_LARGE", (status, body[:200])
        status, _, body = await asyncio.to_thread(http, "POST", node.web_url + "api/avatars", b"not a picture",
                                               {"Content-Type": "image/jpeg"})
        assert status == 400 and "photo" in json.loads(body)["message"].lower()
        status, _, body = await asyncio.to_thread(http, "POST", node.web_url + "api/avatars", photo,
                                               {"Content-Type": "image/jpeg"})
        assert status == 201
        avatar_id = json.loads(body)["avatar_id"]
        status, body = await viewer.start(f"size={W}x{H}&avatar=unknown-id")
        assert status == 404 and json.loads(body)["error"] == "UNKNOWN_AVATAR"
        await viewer.close()
        assert node_sessions(node) == (0, 0)
        viewer = WhepViewer(node.web_url)
        assert (await viewer.start(f"size={W}x{H}&avatar={avatar_id}"))[0] == 201
        await until(lambda: len(viewer.video) > 5, 20, "video of the prepared avatar")
        assert await viewer.delete() == 200
        await viewer.close()


async def test_bad_requests_get_clear_errors_and_hold_nothing():
    with start_node() as node:
        base = node.web_url
        cases = [
            ("POST", "whep", b"v=0", {"Content-Type": "text/plain"}, 415),
            ("POST", "whep", b"hello", {"Content-Type": "application/sdp"}, 400),
            ("POST", "whep?size=7x7", b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", {"Content-Type": "application/sdp"}, 400),
            ("POST", "whep?mic=loud", b"v=0\r\nm=video 9\r\n", {"Content-Type": "application/sdp"}, 400),
            ("DELETE", "whep/nope", None, {}, 404),
        ]
        for method, path, body, headers, expected in cases:
            status, _, reply = await asyncio.to_thread(http, method, base + path, body, headers)
            assert status == expected, (path, status, reply[:200])
            assert json.loads(reply)["message"], reply
        # An offer that is SDP but cannot be answered.
        status, _, reply = await asyncio.to_thread(http, "POST", base + "whep", b"v=0\r\nm=video 9 RTP/AVP 0\r\n",
                                                   {"Content-Type": "application/sdp"})
        assert status == 400, reply[:300]
        await until(lambda: node_sessions(node) == (0, 0), 5, "nothing held")


async def test_web_and_grpc_sessions_share_the_node_limit_and_the_drain(photo):
    from avatar_client import AsyncAvatarClient, AvatarError

    with start_node(max_sessions=1) as node:
        first = WhepViewer(node.web_url)
        assert (await first.start())[0] == 201
        second = WhepViewer(node.web_url)
        status, body = await second.start()
        assert status == 503 and json.loads(body)["error"] == "NODE_AT_CAPACITY", body
        await second.close()
        async with AsyncAvatarClient(node.target) as client:  # gRPC sees the web session too
            with pytest.raises(AvatarError) as refused:
                session = await client.start_session(image=photo, mode="live")
                await session.end()
            assert "capacity" in str(refused.value).lower(), refused.value
        assert await first.delete() == 200
        await until(lambda: node_sessions(node) == (0, 0), 5, "the slot to be free")

        # Draining: the running web session ends, a new one is refused.
        viewer = WhepViewer(node.web_url)
        assert (await viewer.start())[0] == 201
        await until(lambda: len(viewer.video) > 5, 20, "video")
        drain = asyncio.run_coroutine_threadsafe(node.server.runtime.drain(1.0), node.loop)
        late = WhepViewer(node.web_url)
        status, body = await late.start()
        assert status == 503 and json.loads(body)["error"] == "NODE_DRAINING", body
        await late.close()
        await asyncio.wrap_future(drain)
        await until(lambda: node_sessions(node) == (0, 0), 5, "the drain to end the web session")
        await until(lambda: viewer.pc.connectionState in ("closed", "failed"), 10, "the viewer to see the end")
        await viewer.close()


def test_a_browser_that_vanishes_is_noticed_and_its_session_ends(chromium_available):
    """Killed outright: no DELETE, no DTLS goodbye. The node notices the silence (no RTCP)."""
    chrome = Chromium()
    try:
        with start_node() as node:
            page, _ = open_page(chrome, node.web_url + f"?size={W}x{H}&autostart=1")
            wait_playing(page)
            assert node_sessions(node) == (1, 1)
            page.close()
            killed_at = time.monotonic()
            os.killpg(chrome.process.pid, signal.SIGKILL)
            limit = SessionLimits().peer_timeout_s
            wait_for(lambda: node_sessions(node) == (0, 0), limit + 4, "the node to notice the browser is gone")
            print(f"vanished browser's session ended after {time.monotonic() - killed_at:.1f} s")
    finally:
        chrome.kill()


async def test_closing_a_session_is_cancellation_safe_and_returns_everything(photo):
    from avatar_node.pipeline import AvatarRuntime

    async with AvatarRuntime(max_sessions=2, text_to_speech=False) as runtime:
        from aiortc import RTCConfiguration, RTCPeerConnection

        for cancel_after in (0.0, 0.01, 0.2):
            stream = await runtime.open_stream(photo, SessionOptions(live=True, video="rgb", width=W, height=H))
            session = WebSession(stream)
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver("video", direction="recvonly")
            client.addTransceiver("audio", direction="recvonly")
            await client.setLocalDescription(await client.createOffer())
            await session.answer(client.localDescription.sdp)
            closing = asyncio.ensure_future(session.aclose("test"))
            await asyncio.sleep(cancel_after)
            closing.cancel()  # the caller gives up waiting; the teardown must finish anyway
            try:
                await closing
            except asyncio.CancelledError:
                pass
            await until(lambda: runtime.admission.active == 0 and not runtime.streams, 5, "the slot back")
            assert session.pc.connectionState == "closed"
            assert all(t.done() for t in session._tasks)
            await client.close()
