"""What to ask for when a session starts: one description, read by every way of opening one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FeedVideo = Literal["h264", "rgb"]


@dataclass(frozen=True)
class SessionSpec:
    """A live session's avatar and output format, the same for a node and an in-process runtime.

    Give exactly one of `photo` (image bytes) or `avatar_id` (from `prepare_avatar`). `fps=0`
    takes the engine's own rate. `video="rgb"` delivers decoded pictures, `"h264"` the encoded
    access units as the node makes them. `keyframe_interval=0` lets the node choose (two seconds).
    """

    photo: bytes | None = field(default=None, repr=False)
    avatar_id: str = ""
    engine: str = ""
    voice: str = ""
    width: int = 848
    height: int = 480
    fps: float = 0.0
    prompt: str = ""
    framing: str = "auto"
    audio_sample_rate: int = 48_000
    keyframe_interval: int = 0
    video: FeedVideo = "rgb"

    def __post_init__(self) -> None:
        if (self.photo is None) == (not self.avatar_id):
            raise ValueError("give exactly one of photo= (image bytes) or avatar_id=")
        if self.video not in ("h264", "rgb"):
            raise ValueError(f"video must be 'h264' or 'rgb', not {self.video!r}")
        if self.fps < 0:
            raise ValueError(f"fps must be 0 (the engine's rate) or more, not {self.fps:g}")

    @property
    def avatar(self) -> bytes | str:
        """The photo, or the prepared avatar's id."""
        return self.photo if self.photo is not None else self.avatar_id

    def start_options(self) -> dict[str, Any]:
        """Keyword arguments for `AsyncAvatarClient.start_session` (a live session)."""
        return dict(
            image=self.photo, avatar_id=self.avatar_id, engine=self.engine, voice=self.voice,
            width=self.width, height=self.height, fps=self.fps, prompt=self.prompt, framing=self.framing,
            audio_sample_rate=self.audio_sample_rate, keyframe_interval=self.keyframe_interval, mode="live",
        )
