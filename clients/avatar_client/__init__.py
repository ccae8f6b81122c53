"""Python SDK for the avatar node: async and blocking clients, decoding, MP4 recording.

    from avatar_client import AsyncAvatarClient, Mp4Writer

    async with AsyncAvatarClient("127.0.0.1:50051") as client:
        session = await client.start_session(image=Path("me.jpg"), mode="render")
        await session.say("Hello!")
        await session.end()
        with Mp4Writer.for_session("hello.mp4", session.ready) as mp4:
            async for event in session.events():
                mp4.write(event)
"""

from .audio import read_audio_file
from .client import AsyncAvatarClient
from .decode import H264Decoder, MediaFrame, VideoFrame
from .errors import AvatarError
from .events import (
    AudioPacket,
    Ended,
    EngineDescription,
    Event,
    FaceBox,
    NodeInfo,
    Notice,
    PreparedAvatar,
    SessionReady,
    Stats,
    TurnEvent,
    TurnKind,
    VideoPacket,
)
from .live_feed import FeedFrame, FeedHealth, FeedNotice, FeedStatus, FeedTurn, FeedUnavailable, LiveFeed, SessionSpec
from .mp4 import Mp4Writer
from .render import RenderResult, record_session, render_to_mp4
from .session import AvatarSession
from .sync import AvatarClient, AvatarSessionSync
from .tls import tls_credentials

__all__ = [
    "AsyncAvatarClient",
    "AudioPacket",
    "AvatarClient",
    "AvatarError",
    "AvatarSession",
    "AvatarSessionSync",
    "Ended",
    "EngineDescription",
    "Event",
    "FaceBox",
    "FeedFrame",
    "FeedHealth",
    "FeedNotice",
    "FeedStatus",
    "FeedTurn",
    "FeedUnavailable",
    "H264Decoder",
    "LiveFeed",
    "MediaFrame",
    "Mp4Writer",
    "NodeInfo",
    "Notice",
    "PreparedAvatar",
    "RenderResult",
    "SessionReady",
    "SessionSpec",
    "Stats",
    "TurnEvent",
    "TurnKind",
    "VideoFrame",
    "VideoPacket",
    "read_audio_file",
    "record_session",
    "render_to_mp4",
    "tls_credentials",
]
