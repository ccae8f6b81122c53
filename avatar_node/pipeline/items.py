"""What a stream yields, in order: frames with their audio, turn events, notices, stats, the end.

Every item is a plain Python object; every timestamp is on the stream's one media clock
(`pts` counts samples of the output speech audio, so audio and video cannot drift).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class TurnKind(enum.Enum):
    QUEUED = "queued"  # the whole turn is known (text synthesised or end_of_turn received)
    STARTED = "started"  # its first frame is at `pts`
    FINISHED = "finished"  # played to the end, or interrupted


class EndReason(enum.Enum):
    END_REQUESTED = "end_requested"  # the client asked to end
    INPUT_CLOSED = "input_closed"  # the client's input ended without asking; queued speech played
    NODE_SHUTDOWN = "node_shutdown"  # the node drained
    CLIENT_CANCELLED = "client_cancelled"  # the consumer went away (recorded; nobody receives it)


class NoticeCode(enum.Enum):
    UNKNOWN_BEHAVIOUR = "unknown_behaviour"
    FALLING_BEHIND = "falling_behind"
    SLOW_READER = "slow_reader"
    LISTEN_AUDIO_DROPPED = "listen_audio_dropped"
    NOTICES_DROPPED = "notices_dropped"
    DRAINING = "draining"
    AVATAR_ADVICE = "avatar_advice"


@dataclass(frozen=True, eq=False)
class AVFrame:
    """One video frame and exactly the speech audio that plays during it."""

    index: int  # k; pts = round(k * clock_rate / fps)
    pts: int
    duration: int  # clock ticks
    audio: np.ndarray = field(repr=False)  # int16 mono at the clock rate, exactly `duration` samples
    sample_rate: int  # the clock rate
    speaking: bool  # this frame shows speech
    image: np.ndarray | None = field(repr=False)  # RGB uint8 (height, width, 3), when asked for
    encoded: bytes | None = field(repr=False)  # one H.264 access unit (Annex B), when asked for
    keyframe: bool = False
    #: Live only: rendered too late to show, so this frame repeats the previous picture.
    repeated: bool = False


@dataclass(frozen=True)
class TurnEvent:
    turn_id: str
    kind: TurnKind
    pts: int  # STARTED: its first frame; FINISHED: where its speech stopped
    interrupted: bool = False
    played_ms: int = 0  # speech actually delivered before it finished
    duration_ms: int = 0  # the turn's full length, where known


@dataclass(frozen=True)
class Notice:
    code: NoticeCode
    message: str


@dataclass(frozen=True)
class Stats:
    frames_sent: int
    frames_dropped: int  # live: dropped for a consumer that did not keep up
    frames_skipped: int  # live: repeated because rendering fell behind the schedule
    frames_late: int  # live: left more than one frame period after their due time
    speech_underruns: int  # frames where an open turn had no audio yet (silence inserted)
    lag_ms: float  # live: how late the latest frame left against the schedule
    max_lag_ms: float
    realtime_factor: float  # media time produced / wall time
    engine_ms_p50: float  # engine CPU time per frame
    encode_ms_p50: float  # encoder CPU time per frame
    queued_speech_ms: int


@dataclass(frozen=True)
class Ended:
    reason: EndReason
    frames: int  # frames delivered or dropped: the index after the last one
    last_pts: int


StreamItem = AVFrame | TurnEvent | Notice | Stats | Ended
