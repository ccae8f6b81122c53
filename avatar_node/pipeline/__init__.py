"""The avatar pipeline, without any transport: speech, text, listening and controls in;
frames with their exact audio, turn events and stats out, on one media clock.

    from avatar_node.pipeline import AvatarRuntime, SessionOptions, AVFrame

    async with AvatarRuntime() as runtime:                      # the CPU portrait engine
        stream = await runtime.open_stream(photo_bytes, SessionOptions(video="rgb"))
        await stream.say("Hello!")
        async for item in stream:
            if isinstance(item, AVFrame):
                show(item.image, item.audio)                    # RGB picture, int16 audio slice

The gRPC node (`avatar_node.server`) is one adapter of it.
"""

from .errors import ErrorCode, PipelineError
from .items import AVFrame, Ended, EndReason, Notice, NoticeCode, Stats, StreamItem, TurnEvent, TurnKind
from .options import SessionOptions
from .runtime import AvatarRuntime, PreparedAvatar
from .status import EngineStatus, RuntimeStatus
from .stream import AvatarStream

__all__ = [
    "AVFrame",
    "AvatarRuntime",
    "AvatarStream",
    "Ended",
    "EndReason",
    "EngineStatus",
    "ErrorCode",
    "Notice",
    "NoticeCode",
    "PipelineError",
    "PreparedAvatar",
    "RuntimeStatus",
    "SessionOptions",
    "Stats",
    "StreamItem",
    "TurnEvent",
    "TurnKind",
]
