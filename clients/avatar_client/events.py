"""Typed views of what the node sends, converted from the wire messages.

Every timestamp is on the session's one media clock: `pts` counts ticks of
`SessionReady.clock_rate` (the output audio's sample rate) and `time_s` is the same
instant in seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from avatar_proto import avatar_pb2


@dataclass(frozen=True)
class SessionReady:
    """The session is open; this is the format the node actually produces."""

    session_id: str
    engine: str
    avatar_id: str
    width: int
    height: int
    fps: float
    bitrate_kbps: int
    keyframe_interval: int
    clock_rate: int  # pts ticks per second, also the speech audio's sample rate
    codec_config: bytes = field(repr=False)  # H.264 SPS + PPS, Annex B
    codec_string: str  # e.g. "avc1.42c01e"
    engine_lookahead_ms: int

    @property
    def frame_ticks(self) -> float:
        """Clock ticks per video frame."""
        return self.clock_rate / self.fps

    @classmethod
    def from_proto(cls, msg: avatar_pb2.SessionReady) -> SessionReady:
        out = msg.output
        return cls(
            session_id=msg.session_id,
            engine=msg.engine,
            avatar_id=msg.avatar_id,
            width=out.width,
            height=out.height,
            fps=out.fps,
            bitrate_kbps=out.bitrate_kbps,
            keyframe_interval=out.keyframe_interval,
            clock_rate=msg.clock_rate or out.audio_sample_rate,
            codec_config=msg.codec_config,
            codec_string=msg.codec_string,
            engine_lookahead_ms=msg.engine_lookahead_ms,
        )


@dataclass(frozen=True)
class VideoPacket:
    """One encoded frame: an H.264 access unit in Annex B form."""

    data: bytes = field(repr=False)
    pts: int
    duration: int  # clock ticks
    keyframe: bool
    frame_index: int
    speaking: bool
    time_s: float
    repeated: bool = False  # live: the node fell behind and repeated the previous picture

    @classmethod
    def from_proto(cls, msg: avatar_pb2.VideoPacket, clock_rate: int) -> VideoPacket:
        return cls(
            data=msg.data,
            pts=msg.pts,
            duration=msg.duration,
            keyframe=msg.keyframe,
            frame_index=msg.frame_index,
            speaking=msg.speaking,
            time_s=msg.pts / clock_rate,
            repeated=msg.repeated,
        )


@dataclass(frozen=True)
class AudioPacket:
    """Speech audio for the video frame with the same pts: s16le mono PCM."""

    pcm: bytes = field(repr=False)
    pts: int
    sample_rate: int
    time_s: float

    @property
    def samples(self) -> np.ndarray:
        """The PCM as an int16 array (read-only view)."""
        return np.frombuffer(self.pcm, dtype="<i2")

    @property
    def duration_s(self) -> float:
        return len(self.pcm) // 2 / self.sample_rate if self.sample_rate else 0.0

    @classmethod
    def from_proto(cls, msg: avatar_pb2.AudioPacket, clock_rate: int) -> AudioPacket:
        return cls(
            pcm=msg.pcm,
            pts=msg.pts,
            sample_rate=msg.sample_rate or clock_rate,
            time_s=msg.pts / clock_rate,
        )


class TurnKind(enum.StrEnum):
    QUEUED = "queued"  # the whole turn is known
    STARTED = "started"  # its first frame is at pts
    FINISHED = "finished"  # played out, or interrupted
    UNKNOWN = "unknown"


_TURN_KINDS = {
    avatar_pb2.TurnEvent.KIND_QUEUED: TurnKind.QUEUED,
    avatar_pb2.TurnEvent.KIND_STARTED: TurnKind.STARTED,
    avatar_pb2.TurnEvent.KIND_FINISHED: TurnKind.FINISHED,
}


@dataclass(frozen=True)
class TurnEvent:
    """Progress of one speech turn (audio or text)."""

    turn_id: str
    kind: TurnKind
    pts: int
    interrupted: bool
    played_ms: int  # speech actually played before it finished
    duration_ms: int  # the turn's full length, 0 where not yet known

    @classmethod
    def from_proto(cls, msg: avatar_pb2.TurnEvent) -> TurnEvent:
        return cls(
            turn_id=msg.turn_id,
            kind=_TURN_KINDS.get(msg.kind, TurnKind.UNKNOWN),
            pts=msg.pts,
            interrupted=msg.interrupted,
            played_ms=msg.played_ms,
            duration_ms=msg.duration_ms,
        )


@dataclass(frozen=True)
class Stats:
    """Session health, sent periodically (stats_interval_ms) and once at the end."""

    frames_sent: int
    frames_dropped: int  # live: dropped because this client read too slowly
    speech_underruns: int
    realtime_factor: float
    engine_ms_p50: float
    encode_ms_p50: float
    queued_speech_ms: int
    lag_ms: float  # live: how late the latest frame left the node against its schedule
    max_lag_ms: float = 0.0
    frames_late: int = 0  # live: frames that left more than a frame period late
    frames_skipped: int = 0  # live: frames repeated because the node fell behind

    @classmethod
    def from_proto(cls, msg: avatar_pb2.SessionStats) -> Stats:
        return cls(
            frames_sent=msg.frames_sent,
            frames_dropped=msg.frames_dropped,
            speech_underruns=msg.speech_underruns,
            realtime_factor=msg.realtime_factor,
            engine_ms_p50=msg.engine_ms_p50,
            encode_ms_p50=msg.encode_ms_p50,
            queued_speech_ms=msg.queued_speech_ms,
            lag_ms=msg.lag_ms,
            max_lag_ms=msg.max_lag_ms,
            frames_late=msg.frames_late,
            frames_skipped=msg.frames_skipped,
        )


@dataclass(frozen=True)
class Notice:
    """Something the node wants the client to know that is not an error."""

    code: str  # machine-readable: "unknown_behaviour", "falling_behind", "slow_reader", ...
    message: str


@dataclass(frozen=True)
class Ended:
    """The session is over; no more events follow."""

    reason: str  # "end_requested", "input_closed", "node_shutdown"
    frames: int
    last_pts: int


#: Anything `AvatarSession.events()` yields.
Event = VideoPacket | AudioPacket | TurnEvent | Stats | Notice | Ended


def _enum_name(enum: object, value: int, prefix: str) -> str:
    """A wire enum value as a short lower-case name ("unspecified" for values this SDK does not know)."""
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return "unspecified"
    return name.removeprefix(prefix).lower()


def event_from_proto(msg: avatar_pb2.ServerEvent, clock_rate: int) -> Event | SessionReady | None:
    """Convert one ServerEvent; None for a kind this SDK does not know (a newer node)."""
    kind = msg.WhichOneof("event")
    if kind == "video":
        return VideoPacket.from_proto(msg.video, clock_rate)
    if kind == "audio":
        return AudioPacket.from_proto(msg.audio, clock_rate)
    if kind == "turn":
        return TurnEvent.from_proto(msg.turn)
    if kind == "stats":
        return Stats.from_proto(msg.stats)
    if kind == "notice":
        return Notice(code=_enum_name(avatar_pb2.NoticeCode, msg.notice.code, "NOTICE_CODE_"),
                      message=msg.notice.message)
    if kind == "ended":
        e = msg.ended
        return Ended(reason=_enum_name(avatar_pb2.EndReason, e.reason, "END_REASON_"), frames=e.frames,
                     last_pts=e.last_pts)
    if kind == "ready":
        return SessionReady.from_proto(msg.ready)
    return None


@dataclass(frozen=True)
class EngineDescription:
    name: str
    native_fps: float
    frames_per_step: int
    audio_lookahead_ms: int
    is_default: bool
    description: str
    live_capacity: int = 0  # live sessions the node could hold in all, right now


@dataclass(frozen=True)
class NodeInfo:
    """What a node offers and how busy it is."""

    version: str
    engines: tuple[EngineDescription, ...]
    max_sessions: int
    active_sessions: int
    auth_required: bool
    voices: tuple[str, ...]
    max_message_bytes: int
    max_image_pixels: int
    draining: bool
    load: float = 0.0  # share of the node's compute live sessions use, 0..1

    @property
    def default_engine(self) -> str | None:
        for engine in self.engines:
            if engine.is_default:
                return engine.name
        return self.engines[0].name if self.engines else None

    @classmethod
    def from_proto(cls, msg: avatar_pb2.NodeInfo) -> NodeInfo:
        return cls(
            version=msg.version,
            engines=tuple(
                EngineDescription(
                    name=e.name,
                    native_fps=e.native_fps,
                    frames_per_step=e.frames_per_step,
                    audio_lookahead_ms=e.audio_lookahead_ms,
                    is_default=e.is_default,
                    description=e.description,
                    live_capacity=e.live_capacity,
                )
                for e in msg.engines
            ),
            max_sessions=msg.max_sessions,
            active_sessions=msg.active_sessions,
            auth_required=msg.auth_required,
            voices=tuple(msg.voices),
            max_message_bytes=msg.max_message_bytes,
            max_image_pixels=msg.max_image_pixels,
            draining=msg.draining,
            load=msg.load,
        )


@dataclass(frozen=True)
class FaceBox:
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class PreparedAvatar:
    """A photo the node has prepared; start sessions from `avatar_id`."""

    avatar_id: str
    image_width: int
    image_height: int
    face: FaceBox | None
    faces_found: int
    prepare_ms: float
    cached: bool
    notes: tuple[str, ...] = ()  # advice: the avatar works, and how it could be better

    @classmethod
    def from_proto(cls, msg: avatar_pb2.PrepareAvatarResponse) -> PreparedAvatar:
        face = None
        if msg.HasField("face"):
            f = msg.face
            face = FaceBox(x=f.x, y=f.y, width=f.width, height=f.height)
        return cls(
            avatar_id=msg.avatar_id,
            image_width=msg.image_width,
            image_height=msg.image_height,
            face=face,
            faces_found=msg.faces_found,
            prepare_ms=msg.prepare_ms,
            cached=msg.cached,
            notes=tuple(msg.notes),
        )
