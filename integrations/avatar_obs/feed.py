"""Where the stream's frames come from: sessions on a node (or any other `Link`), and their rate.

The stream is an SDK `LiveFeed` in H.264: the node's access units pass through untouched. Any
opener of a `Link` can stand in for the node (an in-process pipeline, a test's own encoder).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import grpc
from avatar_client import AsyncAvatarClient, AvatarError, SessionSpec
from avatar_client.feed_links import Link, NodeLink

#: Opens one session for the stream; called again whenever one is lost.
LinkOpener = Callable[[], Awaitable[Link]]


def node_opener(
    target: str, token: str | None, spec: SessionSpec, credentials: grpc.ChannelCredentials | None = None
) -> LinkOpener:
    """Opens live H.264 sessions on the node at `target` (TLS when `credentials` are given)."""
    spec = dataclasses.replace(spec, video="h264")

    async def open_link() -> Link:
        return await NodeLink.open(target, token, credentials, spec)

    return open_link


async def resolve_fps(
    target: str, token: str | None, spec: SessionSpec, credentials: grpc.ChannelCredentials | None = None
) -> SessionSpec:
    """`spec` with its fps set: as asked, or the engine's own rate from the node's info.

    The stream passes the node's H.264 through, so it runs at the rate the node renders;
    it must be known before the first frame, because the output timeline never changes rate.
    """
    if spec.fps > 0:
        return spec
    async with AsyncAvatarClient(target, token, credentials=credentials) as client:
        info = await client.node_info()
    name = spec.engine or info.default_engine
    for engine in info.engines:
        if engine.name == name:
            return dataclasses.replace(spec, fps=engine.native_fps)
    known = ", ".join(e.name for e in info.engines) or "none"
    raise AvatarError(grpc.StatusCode.NOT_FOUND, f"the node has no engine {name!r} (it has: {known})")
