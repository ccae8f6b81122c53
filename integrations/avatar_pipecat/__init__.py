"""The avatar in Pipecat pipelines: a video service after the TTS, in this process or on an avatar node.

Install with the `[pipecat]` extra. In a pipeline:

    from avatar_pipecat import AvatarVideoService, NodeAddress

    avatar = AvatarVideoService(photo=photo_bytes)                      # in-process, CPU portrait engine
    avatar = AvatarVideoService(photo=photo_bytes, node=NodeAddress("node:50051", token))
    Pipeline([transport.input(), stt, user_agg, llm, tts, avatar, transport.output(), assistant_agg])
"""

from __future__ import annotations

try:
    import pipecat  # noqa: F401
except ModuleNotFoundError as missing:  # say which extra brings it
    raise ImportError(f"{missing}: the Pipecat integration needs the [pipecat] extra (see the README's "
                      "Pipecat section)") from missing

from .feed_source import NodeAddress
from .service import AvatarVideoService, AvatarVideoSettings

__all__ = ["AvatarVideoService", "AvatarVideoSettings", "NodeAddress"]
