"""Wire messages <-> pipeline objects. Nothing here decides anything: it only translates."""

from __future__ import annotations

from avatar_proto import avatar_pb2 as pb

from avatar_node import __version__
from avatar_node.pipeline import errors
from avatar_node.pipeline.items import (
    AVFrame,
    Ended,
    EndReason,
    Notice,
    NoticeCode,
    Stats,
    StreamItem,
    TurnEvent,
    TurnKind,
)
from avatar_node.pipeline.options import SessionOptions
from avatar_node.pipeline.runtime import PreparedAvatar
from avatar_node.pipeline.status import RuntimeStatus
from avatar_node.pipeline.stream import AvatarStream

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000

_FRAMING = {pb.FRAMING_UNSPECIFIED: "auto", pb.FRAMING_AUTO: "auto", pb.FRAMING_FIT: "fit"}
_TURN_KIND = {
    TurnKind.QUEUED: pb.TurnEvent.KIND_QUEUED,
    TurnKind.STARTED: pb.TurnEvent.KIND_STARTED,
    TurnKind.FINISHED: pb.TurnEvent.KIND_FINISHED,
}
_END_REASON = {
    EndReason.END_REQUESTED: pb.END_REASON_END_REQUESTED,
    EndReason.INPUT_CLOSED: pb.END_REASON_INPUT_CLOSED,
    EndReason.NODE_SHUTDOWN: pb.END_REASON_NODE_SHUTDOWN,
    EndReason.CLIENT_CANCELLED: pb.END_REASON_CLIENT_CANCELLED,
}
_NOTICE_CODE = {
    NoticeCode.UNKNOWN_BEHAVIOUR: pb.NOTICE_CODE_UNKNOWN_BEHAVIOUR,
    NoticeCode.FALLING_BEHIND: pb.NOTICE_CODE_FALLING_BEHIND,
    NoticeCode.SLOW_READER: pb.NOTICE_CODE_SLOW_READER,
    NoticeCode.LISTEN_AUDIO_DROPPED: pb.NOTICE_CODE_LISTEN_AUDIO_DROPPED,
    NoticeCode.NOTICES_DROPPED: pb.NOTICE_CODE_NOTICES_DROPPED,
    NoticeCode.DRAINING: pb.NOTICE_CODE_DRAINING,
    NoticeCode.AVATAR_ADVICE: pb.NOTICE_CODE_AVATAR_ADVICE,
}


def start_request(start: pb.StartSession) -> tuple[bytes | str, SessionOptions]:
    """The avatar (photo bytes or prepared id) and the options a `start` asks for."""
    which = start.WhichOneof("avatar")
    if which == "image":
        if not start.image:
            raise errors.invalid("BAD_IMAGE", "`image` is empty; send the bytes of a photo with a face")
        avatar: bytes | str = start.image
    elif which == "avatar_id":
        avatar = start.avatar_id
    else:
        raise errors.invalid("NO_AVATAR", "`start` needs an avatar: set `image` (photo bytes) or `avatar_id`")
    out = start.output
    if out.codec not in (pb.VIDEO_CODEC_UNSPECIFIED, pb.VIDEO_CODEC_H264):
        raise errors.invalid("BAD_OUTPUT_FORMAT", "only H.264 output is supported (codec 0 or VIDEO_CODEC_H264)")
    if start.framing not in _FRAMING:
        raise errors.invalid("BAD_OUTPUT_FORMAT", f"framing {start.framing} is unknown; use "
                                                  f"FRAMING_AUTO or FRAMING_FIT")
    options = SessionOptions(
        engine=start.engine,
        live=start.mode != pb.SESSION_MODE_RENDER,
        width=out.width,
        height=out.height,
        fps=out.fps,
        clock_rate=out.audio_sample_rate or 48000,
        bitrate_kbps=out.bitrate_kbps,
        keyframe_interval=out.keyframe_interval,
        voice=start.voice,
        prompt=start.prompt,
        framing=_FRAMING[start.framing],
        stats_interval_ms=start.stats_interval_ms,
        video="h264",
    )
    return avatar, options


def ready(stream: AvatarStream) -> pb.SessionReady:
    o = stream.options
    encoder = stream.encoder
    assert encoder is not None
    return pb.SessionReady(
        session_id=stream.session_id,
        engine=stream.engine.info.name,
        avatar_id=stream.identity.avatar_id,
        output=pb.OutputFormat(
            width=o.width,
            height=o.height,
            fps=o.fps,
            codec=pb.VIDEO_CODEC_H264,
            bitrate_kbps=encoder.bitrate_kbps,
            keyframe_interval=encoder.keyframe_interval,
            audio_sample_rate=o.clock_rate,
        ),
        clock_rate=o.clock_rate,
        codec_config=stream.codec_config,
        codec_string=encoder.codec_string,
        engine_lookahead_ms=stream.engine.info.audio_lookahead_ms,
    )


def frame_events(frame: AVFrame) -> tuple[pb.ServerEvent, pb.ServerEvent]:
    video = pb.VideoPacket(
        data=frame.encoded or b"",
        pts=frame.pts,
        duration=frame.duration,
        keyframe=frame.keyframe,
        frame_index=frame.index,
        speaking=frame.speaking,
        repeated=frame.repeated,
    )
    audio = pb.AudioPacket(pcm=frame.audio.tobytes(), pts=frame.pts, sample_rate=frame.sample_rate)
    return pb.ServerEvent(video=video), pb.ServerEvent(audio=audio)


def server_event(item: StreamItem) -> pb.ServerEvent:
    """Any item but a frame (frames become two events: see `frame_events`)."""
    if isinstance(item, TurnEvent):
        return pb.ServerEvent(
            turn=pb.TurnEvent(
                turn_id=item.turn_id,
                kind=_TURN_KIND[item.kind],
                pts=item.pts,
                interrupted=item.interrupted,
                played_ms=item.played_ms,
                duration_ms=item.duration_ms,
            )
        )
    if isinstance(item, Stats):
        return pb.ServerEvent(
            stats=pb.SessionStats(
                frames_sent=item.frames_sent,
                frames_dropped=item.frames_dropped,
                speech_underruns=item.speech_underruns,
                realtime_factor=item.realtime_factor,
                engine_ms_p50=item.engine_ms_p50,
                encode_ms_p50=item.encode_ms_p50,
                queued_speech_ms=item.queued_speech_ms,
                lag_ms=item.lag_ms,
                max_lag_ms=item.max_lag_ms,
                frames_late=item.frames_late,
                frames_skipped=item.frames_skipped,
            )
        )
    if isinstance(item, Notice):
        return pb.ServerEvent(notice=pb.Notice(code=_NOTICE_CODE[item.code], message=item.message))
    if isinstance(item, Ended):
        return pb.ServerEvent(ended=pb.SessionEnded(reason=_END_REASON[item.reason], frames=item.frames,
                                                    last_pts=item.last_pts))
    raise TypeError(f"no wire form for {type(item).__name__}")


def prepared(result: PreparedAvatar) -> pb.PrepareAvatarResponse:
    identity = result.identity
    face = identity.face
    return pb.PrepareAvatarResponse(
        avatar_id=identity.avatar_id,
        image_width=identity.image_width,
        image_height=identity.image_height,
        face=pb.FaceBox(x=face.x, y=face.y, width=face.width, height=face.height) if face else None,
        faces_found=identity.faces_found,
        prepare_ms=result.prepare_ms,
        cached=result.cached,
        notes=list(identity.notes),
    )


def node_info(status: RuntimeStatus, auth_required: bool, voices: list[str]) -> pb.NodeInfo:
    return pb.NodeInfo(
        version=__version__,
        engines=[
            pb.EngineDescription(
                name=e.info.name,
                native_fps=e.info.native_fps,
                frames_per_step=e.info.frames_per_step,
                audio_lookahead_ms=e.info.audio_lookahead_ms,
                is_default=e.is_default,
                description=e.info.description,
                live_capacity=e.live_capacity,
            )
            for e in status.engines
        ],
        max_sessions=status.max_sessions,
        active_sessions=status.active_sessions,
        auth_required=auth_required,
        voices=voices,
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_image_pixels=MAX_IMAGE_PIXELS,
        draining=status.draining,
        load=status.load,
    )
