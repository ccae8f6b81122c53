"""The web page's upload takes a short video of the person as well as a photo."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ..portrait.clip_media import real_clip
from .conftest import http, start_node

STATIC = Path(__file__).resolve().parents[2] / "avatar_node" / "web" / "static"


async def test_a_video_upload_prepares_a_clip_avatar():
    assert "video/mp4" in (STATIC / "index.html").read_text()  # the file picker offers videos
    with start_node() as node:
        status, _, body = await asyncio.to_thread(
            http, "POST", node.web_url + "api/avatars", real_clip("carphone"), {"Content-Type": "video/mp4"}
        )
        assert status == 201, body[:300]
        prepared = json.loads(body)
        assert (prepared["width"], prepared["height"]) == (176, 144)
        status, _, body = await asyncio.to_thread(
            http, "POST", node.web_url + "api/avatars", b"\x00\x00\x00\x20ftypisom" + bytes(4000),
            {"Content-Type": "video/mp4"},
        )
        assert status == 400 and "could not be read as a video" in json.loads(body)["message"], body[:300]
