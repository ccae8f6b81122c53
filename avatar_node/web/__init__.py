"""The node's web page: talk to the avatar from a browser, over WebRTC (WHEP).

    avatar-node serve --web            # the page on http://127.0.0.1:8080/ beside gRPC
    avatar web                         # the same with a node in this process

`WebServer(runtime, WebConfig(...))` serves the page and a WHEP endpoint over an
`AvatarRuntime` (the gRPC server's own, when started by the node). It needs the `[web]`
extra (aiortc, aiohttp).
"""

from __future__ import annotations

MISSING_EXTRA = "the web page needs the [web] extra: pip install 'avatar-node[web]'"


def web_extra_missing() -> str | None:
    """None when aiortc and aiohttp import, else a one-line message that says what to install."""
    try:
        import aiohttp  # noqa: F401
        import aiortc  # noqa: F401
    except ImportError as exc:
        return f"{MISSING_EXTRA} ({exc.name or exc} is missing)"
    return None


__all__ = ["MISSING_EXTRA", "web_extra_missing"]
