"""Where the avatar's frames come from: a `LiveFeed` over a node (gRPC, TLS, token) or over an
`AvatarRuntime` in this process, opened and closed as one thing.

In-process, a runtime made here (the CPU portrait engine unless told) is closed with the feed;
a runtime handed in belongs to its caller. Nothing of `avatar_node` is imported in node mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from avatar_client.live_feed import LiveFeed, SessionSpec

if TYPE_CHECKING:
    from avatar_node.pipeline import AvatarRuntime


@dataclass(frozen=True)
class NodeAddress:
    """An avatar node: `target` ("host:port"), its token, TLS credentials (`tls_credentials(...)`)."""

    target: str
    token: str | None = None
    credentials: grpc.ChannelCredentials | None = None
    #: Reconnect back-off, doubling from the first to the most (seconds).
    retry_min_s: float = 0.5
    retry_max_s: float = 8.0


class FeedSource:
    """Opens the live feed for one pipeline run and closes everything it opened."""

    def __init__(self, spec: SessionSpec, node: NodeAddress | None, runtime: AvatarRuntime | None) -> None:
        if node is not None and runtime is not None:
            raise ValueError("give node= (render on an avatar node) or runtime= (in this process), not both")
        self.spec = spec
        self.node = node
        self._given_runtime = runtime
        self._own_runtime: AvatarRuntime | None = None
        self.feed: LiveFeed | None = None

    @property
    def describe(self) -> str:
        return f"the avatar node at {self.node.target}" if self.node is not None else "the in-process avatar"

    async def open(self) -> LiveFeed:
        """The feed, its first session open (AvatarError from the node says why not)."""
        node = self.node
        if node is not None:
            self.feed = await LiveFeed.open_node(
                node.target, node.token, node.credentials, self.spec,
                retry_min_s=node.retry_min_s, retry_max_s=node.retry_max_s,
            )
            return self.feed
        runtime = self._given_runtime
        if runtime is None:
            from avatar_node.pipeline import AvatarRuntime

            runtime = AvatarRuntime([self.spec.engine or "portrait"], max_sessions=1, text_to_speech=False)
            self._own_runtime = runtime
            await runtime.start()
        self.feed = await LiveFeed.open_runtime(runtime, self.spec)
        return self.feed

    async def aclose(self) -> None:
        """Close the feed (its session ends) and a runtime made here. Idempotent."""
        feed, self.feed = self.feed, None
        runtime, self._own_runtime = self._own_runtime, None
        try:
            if feed is not None:
                await feed.aclose()
        finally:
            if runtime is not None:
                await runtime.aclose()
