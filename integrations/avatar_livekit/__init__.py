"""Avatars for LiveKit: an Agents avatar plugin (local and node modes), an avatar worker, a room bot.

Install with the `[livekit]` extra. In an agent:

    from avatar_livekit import AvatarSession

    avatar = AvatarSession(image="me.jpg")          # mode="node" to render on an avatar node
    await avatar.start(session, room=ctx.room)      # before session.start(...)

`avatar-livekit worker` serves node mode; `avatar-livekit bot` gives a participant's voice a face.
"""

from .errors import AvatarLiveKitError
from .frames import RenderedFrame, Renderer, TurnFinished, TurnStarted, VideoFormat
from .job import AvatarJobRequest, avatar_token
from .room_avatar import RoomAvatar
from .session import AvatarSession

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
