"""What a live feed yields: frames with their own audio, turn events, where the node stands, its counters, notices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeedFormat:
    """The picture and clock every frame of a feed shares, across all its sessions."""

    width: int
    height: int
    fps: float
    clock_rate: int  # pts ticks per second, also the speech audio's sample rate
    codec_config: bytes = field(default=b"", repr=False)  # H.264 SPS + PPS (Annex B); h264 feeds

    def pts(self, index: int) -> int:
        """The pts of frame `index` on this clock."""
        return round(index * self.clock_rate / self.fps)

    def samples(self, index: int) -> int:
        """How many audio samples frame `index` carries: exactly up to the next frame's pts."""
        return self.pts(index + 1) - self.pts(index)


@dataclass(frozen=True)
class FeedFrame:
    """One frame of the feed's timeline and exactly the speech audio that plays during it.

    `picture` (RGB uint8, height x width x 3) for an "rgb" feed, `access_unit` (one H.264
    access unit, Annex B) for an "h264" feed. `idle` frames are made by the feed while the node
    is away: the last picture (for H.264, the last keyframe) held, with silence.
    """

    index: int
    pts: int
    picture: np.ndarray | None = field(repr=False)
    access_unit: bytes | None = field(repr=False)
    keyframe: bool
    audio: np.ndarray = field(repr=False)  # int16 mono at the clock rate
    speaking: bool
    idle: bool = False


@dataclass(frozen=True)
class FeedTurn:
    """A speech turn started (its first frame is at `pts`) or finished (its speech stopped at `pts`)."""

    turn_id: str
    kind: str  # "started" or "finished"
    pts: int
    interrupted: bool = False
    played_ms: int = 0


@dataclass(frozen=True)
class FeedStatus:
    """The feed reached a session (`connected`), or lost it and retries in `retry_in_s`."""

    connected: bool
    detail: str  # the session when connected, else why it was lost
    retry_in_s: float = 0.0
    attempt: int = 0  # retries since the last session


@dataclass(frozen=True)
class FeedHealth:
    """The node's own counters for the current session (about once a second)."""

    speech_underruns: int  # speech arrived late; the node inserted a silent frame
    frames_dropped: int  # the feed read too slowly; the node skipped frames


@dataclass(frozen=True)
class FeedNotice:
    """Something the session wants its user to know that is not an error (e.g. "falling_behind")."""

    code: str
    message: str


FeedItem = FeedFrame | FeedTurn | FeedStatus | FeedHealth | FeedNotice
