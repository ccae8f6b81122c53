"""Avatars for LiveKit: an Agents avatar plugin (local and node modes), an avatar worker, a room bot.

Install with the `[livekit]` extra. In an agent:

    from avatar_livekit import AvatarSession

    avatar = AvatarSession(image="me.jpg")          # mode="node" to render on an avatar node
    await avatar.start(session, room=ctx.room)      # before session.start(...)

`avatar-livekit worker` serves node mode; `avatar-livekit bot` gives a participant's voice a face.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import AvatarLiveKitError
    from .frames import RenderedFrame, Renderer, TurnFinished, TurnStarted, VideoFormat
    from .job import AvatarJobRequest, avatar_token
    from .room_avatar import RoomAvatar
    from .session import AvatarSession

# Imported on first use, so that `avatar-livekit --help` (avatar_livekit.cli) works, and can say
# which extra to install, where the LiveKit packages are missing.
_HOMES = {
    "AvatarLiveKitError": ".errors", "RenderedFrame": ".frames", "Renderer": ".frames",
    "TurnFinished": ".frames", "TurnStarted": ".frames", "VideoFormat": ".frames",
    "AvatarJobRequest": ".job", "avatar_token": ".job", "RoomAvatar": ".room_avatar", "AvatarSession": ".session",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)

__all__ = [
    "AvatarJobRequest",
    "AvatarLiveKitError",
    "AvatarSession",
    "RenderedFrame",
    "Renderer",
    "RoomAvatar",
    "TurnFinished",
    "TurnStarted",
    "VideoFormat",
    "avatar_token",
]
