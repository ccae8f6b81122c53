from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_MODE_UNSPECIFIED: _ClassVar[SessionMode]
    SESSION_MODE_LIVE: _ClassVar[SessionMode]
    SESSION_MODE_RENDER: _ClassVar[SessionMode]

class VideoCodec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIDEO_CODEC_UNSPECIFIED: _ClassVar[VideoCodec]
    VIDEO_CODEC_H264: _ClassVar[VideoCodec]

class Framing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAMING_UNSPECIFIED: _ClassVar[Framing]
    FRAMING_AUTO: _ClassVar[Framing]
    FRAMING_FIT: _ClassVar[Framing]

class NoticeCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTICE_CODE_UNSPECIFIED: _ClassVar[NoticeCode]
    NOTICE_CODE_UNKNOWN_BEHAVIOUR: _ClassVar[NoticeCode]
    NOTICE_CODE_FALLING_BEHIND: _ClassVar[NoticeCode]
    NOTICE_CODE_SLOW_READER: _ClassVar[NoticeCode]
    NOTICE_CODE_LISTEN_AUDIO_DROPPED: _ClassVar[NoticeCode]
    NOTICE_CODE_NOTICES_DROPPED: _ClassVar[NoticeCode]
    NOTICE_CODE_DRAINING: _ClassVar[NoticeCode]
    NOTICE_CODE_AVATAR_ADVICE: _ClassVar[NoticeCode]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_END_REQUESTED: _ClassVar[EndReason]
    END_REASON_INPUT_CLOSED: _ClassVar[EndReason]
    END_REASON_NODE_SHUTDOWN: _ClassVar[EndReason]
    END_REASON_CLIENT_CANCELLED: _ClassVar[EndReason]
SESSION_MODE_UNSPECIFIED: SessionMode
SESSION_MODE_LIVE: SessionMode
SESSION_MODE_RENDER: SessionMode
VIDEO_CODEC_UNSPECIFIED: VideoCodec
VIDEO_CODEC_H264: VideoCodec
FRAMING_UNSPECIFIED: Framing
FRAMING_AUTO: Framing
FRAMING_FIT: Framing
NOTICE_CODE_UNSPECIFIED: NoticeCode
NOTICE_CODE_UNKNOWN_BEHAVIOUR: NoticeCode
NOTICE_CODE_FALLING_BEHIND: NoticeCode
NOTICE_CODE_SLOW_READER: NoticeCode
NOTICE_CODE_LISTEN_AUDIO_DROPPED: NoticeCode
NOTICE_CODE_NOTICES_DROPPED: NoticeCode
NOTICE_CODE_DRAINING: NoticeCode
NOTICE_CODE_AVATAR_ADVICE: NoticeCode
END_REASON_UNSPECIFIED: EndReason
END_REASON_END_REQUESTED: EndReason
END_REASON_INPUT_CLOSED: EndReason
END_REASON_NODE_SHUTDOWN: EndReason
END_REASON_CLIENT_CANCELLED: EndReason

class ClientEvent(_message.Message):
    __slots__ = ("start", "speech_audio", "text", "listen_audio", "control", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    SPEECH_AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LISTEN_AUDIO_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: StartSession
    speech_audio: SpeechAudio
    text: SpeakText
    listen_audio: ListenAudio
    control: Control
    end: EndSession
    def __init__(self, start: _Optional[_Union[StartSession, _Mapping]] = ..., speech_audio: _Optional[_Union[SpeechAudio, _Mapping]] = ..., text: _Optional[_Union[SpeakText, _Mapping]] = ..., listen_audio: _Optional[_Union[ListenAudio, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ..., end: _Optional[_Union[EndSession, _Mapping]] = ...) -> None: ...

class OutputFormat(_message.Message):
    __slots__ = ("width", "height", "fps", "codec", "bitrate_kbps", "keyframe_interval", "audio_sample_rate")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    BITRATE_KBPS_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    fps: float
    codec: VideoCodec
    bitrate_kbps: int
    keyframe_interval: int
    audio_sample_rate: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., codec: _Optional[_Union[VideoCodec, str]] = ..., bitrate_kbps: _Optional[int] = ..., keyframe_interval: _Optional[int] = ..., audio_sample_rate: _Optional[int] = ...) -> None: ...

class StartSession(_message.Message):
    __slots__ = ("image", "avatar_id", "engine", "output", "voice", "prompt", "mode", "stats_interval_ms", "framing")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    FRAMING_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    avatar_id: str
    engine: str
    output: OutputFormat
    voice: str
    prompt: str
    mode: SessionMode
    stats_interval_ms: int
    framing: Framing
    def __init__(self, image: _Optional[bytes] = ..., avatar_id: _Optional[str] = ..., engine: _Optional[str] = ..., output: _Optional[_Union[OutputFormat, _Mapping]] = ..., voice: _Optional[str] = ..., prompt: _Optional[str] = ..., mode: _Optional[_Union[SessionMode, str]] = ..., stats_interval_ms: _Optional[int] = ..., framing: _Optional[_Union[Framing, str]] = ...) -> None: ...

class SpeechAudio(_message.Message):
    __slots__ = ("pcm", "sample_rate", "channels", "end_of_turn", "turn_id")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    END_OF_TURN_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_rate: int
    channels: int
    end_of_turn: bool
    turn_id: str
    def __init__(self, pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., end_of_turn: _Optional[bool] = ..., turn_id: _Optional[str] = ...) -> None: ...

class SpeakText(_message.Message):
    __slots__ = ("text", "voice", "turn_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    voice: str
    turn_id: str
    def __init__(self, text: _Optional[str] = ..., voice: _Optional[str] = ..., turn_id: _Optional[str] = ...) -> None: ...

class ListenAudio(_message.Message):
    __slots__ = ("pcm", "sample_rate", "channels")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_rate: int
    channels: int
    def __init__(self, pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("interrupt", "behaviour", "prompt")
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOUR_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    interrupt: Interrupt
    behaviour: Behaviour
    prompt: SetPrompt
    def __init__(self, interrupt: _Optional[_Union[Interrupt, _Mapping]] = ..., behaviour: _Optional[_Union[Behaviour, _Mapping]] = ..., prompt: _Optional[_Union[SetPrompt, _Mapping]] = ...) -> None: ...

class Interrupt(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Behaviour(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SetPrompt(_message.Message):
    __slots__ = ("prompt",)
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    def __init__(self, prompt: _Optional[str] = ...) -> None: ...

class EndSession(_message.Message):
    __slots__ = ("discard_pending",)
    DISCARD_PENDING_FIELD_NUMBER: _ClassVar[int]
    discard_pending: bool
    def __init__(self, discard_pending: _Optional[bool] = ...) -> None: ...

class ServerEvent(_message.Message):
    __slots__ = ("ready", "video", "audio", "turn", "stats", "notice", "ended")
    READY_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ready: SessionReady
    video: VideoPacket
    audio: AudioPacket
    turn: TurnEvent
    stats: SessionStats
    notice: Notice
    ended: SessionEnded
    def __init__(self, ready: _Optional[_Union[SessionReady, _Mapping]] = ..., video: _Optional[_Union[VideoPacket, _Mapping]] = ..., audio: _Optional[_Union[AudioPacket, _Mapping]] = ..., turn: _Optional[_Union[TurnEvent, _Mapping]] = ..., stats: _Optional[_Union[SessionStats, _Mapping]] = ..., notice: _Optional[_Union[Notice, _Mapping]] = ..., ended: _Optional[_Union[SessionEnded, _Mapping]] = ...) -> None: ...

class SessionReady(_message.Message):
    __slots__ = ("session_id", "engine", "avatar_id", "output", "clock_rate", "codec_config", "codec_string", "engine_lookahead_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CLOCK_RATE_FIELD_NUMBER: _ClassVar[int]
    CODEC_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CODEC_STRING_FIELD_NUMBER: _ClassVar[int]
    ENGINE_LOOKAHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    engine: str
    avatar_id: str
    output: OutputFormat
    clock_rate: int
    codec_config: bytes
    codec_string: str
    engine_lookahead_ms: int
    def __init__(self, session_id: _Optional[str] = ..., engine: _Optional[str] = ..., avatar_id: _Optional[str] = ..., output: _Optional[_Union[OutputFormat, _Mapping]] = ..., clock_rate: _Optional[int] = ..., codec_config: _Optional[bytes] = ..., codec_string: _Optional[str] = ..., engine_lookahead_ms: _Optional[int] = ...) -> None: ...

class VideoPacket(_message.Message):
    __slots__ = ("data", "pts", "duration", "keyframe", "frame_index", "speaking", "repeated")
    DATA_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_FIELD_NUMBER: _ClassVar[int]
    REPEATED_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    pts: int
    duration: int
    keyframe: bool
    frame_index: int
    speaking: bool
    repeated: bool
    def __init__(self, data: _Optional[bytes] = ..., pts: _Optional[int] = ..., duration: _Optional[int] = ..., keyframe: _Optional[bool] = ..., frame_index: _Optional[int] = ..., speaking: _Optional[bool] = ..., repeated: _Optional[bool] = ...) -> None: ...

class AudioPacket(_message.Message):
    __slots__ = ("pcm", "pts", "sample_rate")
    PCM_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    pts: int
    sample_rate: int
    def __init__(self, pcm: _Optional[bytes] = ..., pts: _Optional[int] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class TurnEvent(_message.Message):
    __slots__ = ("turn_id", "kind", "pts", "interrupted", "played_ms", "duration_ms")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[TurnEvent.Kind]
        KIND_QUEUED: _ClassVar[TurnEvent.Kind]
        KIND_STARTED: _ClassVar[TurnEvent.Kind]
        KIND_FINISHED: _ClassVar[TurnEvent.Kind]
    KIND_UNSPECIFIED: TurnEvent.Kind
    KIND_QUEUED: TurnEvent.Kind
    KIND_STARTED: TurnEvent.Kind
    KIND_FINISHED: TurnEvent.Kind
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    PLAYED_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    kind: TurnEvent.Kind
    pts: int
    interrupted: bool
    played_ms: int
    duration_ms: int
    def __init__(self, turn_id: _Optional[str] = ..., kind: _Optional[_Union[TurnEvent.Kind, str]] = ..., pts: _Optional[int] = ..., interrupted: _Optional[bool] = ..., played_ms: _Optional[int] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class SessionStats(_message.Message):
    __slots__ = ("frames_sent", "frames_dropped", "speech_underruns", "realtime_factor", "engine_ms_p50", "encode_ms_p50", "queued_speech_ms", "lag_ms", "max_lag_ms", "frames_late", "frames_skipped")
    FRAMES_SENT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_UNDERRUNS_FIELD_NUMBER: _ClassVar[int]
    REALTIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ENGINE_MS_P50_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_P50_FIELD_NUMBER: _ClassVar[int]
    QUEUED_SPEECH_MS_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_LAG_MS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_LATE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    frames_sent: int
    frames_dropped: int
    speech_underruns: int
    realtime_factor: float
    engine_ms_p50: float
    encode_ms_p50: float
    queued_speech_ms: int
    lag_ms: float
    max_lag_ms: float
    frames_late: int
    frames_skipped: int
    def __init__(self, frames_sent: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., speech_underruns: _Optional[int] = ..., realtime_factor: _Optional[float] = ..., engine_ms_p50: _Optional[float] = ..., encode_ms_p50: _Optional[float] = ..., queued_speech_ms: _Optional[int] = ..., lag_ms: _Optional[float] = ..., max_lag_ms: _Optional[float] = ..., frames_late: _Optional[int] = ..., frames_skipped: _Optional[int] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("message", "code")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    message: str
    code: NoticeCode
    def __init__(self, message: _Optional[str] = ..., code: _Optional[_Union[NoticeCode, str]] = ...) -> None: ...

class SessionEnded(_message.Message):
    __slots__ = ("frames", "last_pts", "reason")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    LAST_PTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    frames: int
    last_pts: int
    reason: EndReason
    def __init__(self, frames: _Optional[int] = ..., last_pts: _Optional[int] = ..., reason: _Optional[_Union[EndReason, str]] = ...) -> None: ...

class PrepareAvatarRequest(_message.Message):
    __slots__ = ("image", "engine")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    engine: str
    def __init__(self, image: _Optional[bytes] = ..., engine: _Optional[str] = ...) -> None: ...

class FaceBox(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ...) -> None: ...

class PrepareAvatarResponse(_message.Message):
    __slots__ = ("avatar_id", "image_width", "image_height", "face", "faces_found", "prepare_ms", "cached", "notes")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    FACES_FOUND_FIELD_NUMBER: _ClassVar[int]
    PREPARE_MS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    image_width: int
    image_height: int
    face: FaceBox
    faces_found: int
    prepare_ms: float
    cached: bool
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, avatar_id: _Optional[str] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., face: _Optional[_Union[FaceBox, _Mapping]] = ..., faces_found: _Optional[int] = ..., prepare_ms: _Optional[float] = ..., cached: _Optional[bool] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetNodeInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EngineDescription(_message.Message):
    __slots__ = ("name", "native_fps", "frames_per_step", "audio_lookahead_ms", "is_default", "description", "live_capacity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    AUDIO_LOOKAHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LIVE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    native_fps: float
    frames_per_step: int
    audio_lookahead_ms: int
    is_default: bool
    description: str
    live_capacity: int
    def __init__(self, name: _Optional[str] = ..., native_fps: _Optional[float] = ..., frames_per_step: _Optional[int] = ..., audio_lookahead_ms: _Optional[int] = ..., is_default: _Optional[bool] = ..., description: _Optional[str] = ..., live_capacity: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("version", "engines", "max_sessions", "active_sessions", "auth_required", "voices", "max_message_bytes", "max_image_pixels", "draining", "load")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    version: str
    engines: _containers.RepeatedCompositeFieldContainer[EngineDescription]
    max_sessions: int
    active_sessions: int
    auth_required: bool
    voices: _containers.RepeatedScalarFieldContainer[str]
    max_message_bytes: int
    max_image_pixels: int
    draining: bool
    load: float
    def __init__(self, version: _Optional[str] = ..., engines: _Optional[_Iterable[_Union[EngineDescription, _Mapping]]] = ..., max_sessions: _Optional[int] = ..., active_sessions: _Optional[int] = ..., auth_required: _Optional[bool] = ..., voices: _Optional[_Iterable[str]] = ..., max_message_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., draining: _Optional[bool] = ..., load: _Optional[float] = ...) -> None: ...
