"""Turning an uploaded video into upright frames on a fixed clock, refusing what cannot be used.

A clip avatar is recognised by its container's opening bytes (MP4/MOV, Matroska/WebM,
AVI), never by a file name. Frames are read by their timestamps and re-timed onto a fixed
CLIP_FPS clock (one frame per tick: the frame showing at that instant), so a phone's
variable frame rate plays at its true speed. The display rotation a phone records is
applied, and frames are reduced to a working size: the avatar is shown at 480p.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import cv2
import numpy as np

from avatar_node.engines.base import AvatarInputError

#: The clock clip frames are re-timed onto (the engine's native rate).
CLIP_FPS = 25.0
#: Largest clip accepted, in bytes: the node's gRPC message limit (rpc.convert.MAX_MESSAGE_BYTES).
MAX_CLIP_BYTES = 16 * 1024 * 1024
#: Longest clip accepted, in seconds (30-120 s is what a good avatar needs).
MAX_CLIP_SECONDS = 180.0
#: Working size: frames are reduced until both sides fit (the output is 480p).
MAX_WORKING_LONG = 768
MAX_WORKING_SHORT = 432

_RECORD_HINT = "re-encode it, e.g. `ffmpeg -i clip.mov -vf scale=-2:480 -crf 26 -an clip.mp4`"


def looks_like_video(data: bytes) -> bool:
    """True when the bytes open like a video container (MP4/MOV, Matroska/WebM, AVI)."""
    head = data[:16]
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide"):  # ISO base media / QuickTime
        return True
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska, WebM
        return True
    return head[:4] == b"RIFF" and head[8:12] == b"AVI "


@dataclass(frozen=True)
class DecodedClip:
    """Upright RGB frames on the CLIP_FPS clock, reduced by `scale` from the original size."""

    frames: list[np.ndarray]
    width: int  # upright original size
    height: int
    scale: float  # working pixels per original pixel

    @property
    def seconds(self) -> float:
        return len(self.frames) / CLIP_FPS


def decode_clip(data: bytes) -> DecodedClip:
    """Decode a clip, or raise AvatarInputError naming the problem and what to do."""
    if len(data) > MAX_CLIP_BYTES:
        raise AvatarInputError(
            f"The avatar clip is {len(data) / 2**20:.1f} MB; the limit is {MAX_CLIP_BYTES // 2**20} MB. "
            f"Send 30-120 s at 480p or 720p: {_RECORD_HINT}.",
            "CLIP_TOO_LARGE",
        )
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise _unreadable(exc) from exc
    with container:
        if not container.streams.video:
            raise AvatarInputError(
                "The avatar clip has no video track. Send an MP4, MOV or WebM recording of your face.", "BAD_CLIP"
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > MAX_CLIP_SECONDS:
            raise _too_long(declared)
        try:
            return _retimed(container, stream)
        except AvatarInputError:
            raise
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise _unreadable(exc) from exc


def _retimed(container: av.container.InputContainer, stream: av.VideoStream) -> DecodedClip:
    frames: list[np.ndarray] = []
    pending: np.ndarray | None = None
    pending_t = 0.0
    start: float | None = None
    step = 1.0 / CLIP_FPS
    rate = float(stream.average_rate or CLIP_FPS)
    size: tuple[int, int] | None = None
    scale = 1.0
    for n, frame in enumerate(container.decode(stream)):
        t = float(frame.time) if frame.time is not None else n / rate
        if start is None:
            start = t
        t -= start
        if t > MAX_CLIP_SECONDS:
            raise _too_long(t)
        rgb: np.ndarray = frame.to_ndarray(format="rgb24")
        turns = int(round((frame.rotation or 0) / 90.0)) % 4
        if turns:
            rgb = np.rot90(rgb, turns)  # counterclockwise, as the display matrix says
        if size is None:
            size = (rgb.shape[1], rgb.shape[0])
            scale = min(1.0, MAX_WORKING_LONG / max(size), MAX_WORKING_SHORT / min(size))
        if scale < 1.0:
            w, h = (max(2, round(size[0] * scale) // 2 * 2), max(2, round(size[1] * scale) // 2 * 2))
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        else:
            rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]  # even sides (4:2:0 storage)
        # Each tick shows the newest frame that started at or before it.
        if pending is not None:
            while len(frames) * step < t - 1e-6:
                frames.append(pending)
        # (a clock denser than ours replaces the pending frame before any tick takes it)
        pending = np.ascontiguousarray(rgb)
        pending_t = t
    if pending is None or size is None:
        raise AvatarInputError(
            "The avatar clip holds no video frames that could be decoded. Record it again, or " + _RECORD_HINT + ".",
            "BAD_CLIP",
        )
    # The last frame lasts one of its own frame intervals.
    while len(frames) * step < pending_t + 1.0 / rate - 1e-6:
        frames.append(pending)
    return DecodedClip(frames, size[0], size[1], scale)


def _declared_seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _too_long(seconds: float) -> AvatarInputError:
    return AvatarInputError(
        f"The avatar clip is {seconds:.0f} s long; the limit is {MAX_CLIP_SECONDS:.0f} s. "
        "Cut it to the best 30-120 s, e.g. `ffmpeg -i clip.mp4 -t 90 -c copy short.mp4`.",
        "CLIP_TOO_LONG",
    )


def _unreadable(exc: BaseException) -> AvatarInputError:
    return AvatarInputError(
        "The avatar clip could not be read as a video. Send an MP4 (H.264), MOV or WebM file, or "
        f"{_RECORD_HINT} ({type(exc).__name__}: {exc}).",
        "BAD_CLIP",
    )
