"""Decoding the node's H.264 packets into RGB frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np

from .events import VideoPacket


@dataclass(frozen=True)
class VideoFrame:
    """One decoded output frame."""

    index: int  # frame number k in the session
    pts: int  # clock ticks
    time_s: float
    image: np.ndarray = field(repr=False)  # HxWx3 uint8 RGB
    speaking: bool

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]


@dataclass(frozen=True)
class MediaFrame:
    """A decoded video frame and the speech audio that plays with it."""

    video: VideoFrame
    audio: np.ndarray = field(repr=False)  # int16 mono at sample_rate; empty if none arrived
    sample_rate: int


class H264Decoder:
    """Turns Annex B access units into RGB frames, keeping each packet's pts and flags.

    The node's streams have no B-frames, so each packet normally yields its frame at once;
    a decoder that holds frames back still returns them, in order, with the right metadata.
    """

    def __init__(self, codec_config: bytes = b"") -> None:
        self._codec = av.CodecContext.create("h264", "r")
        self._pending: dict[int, VideoPacket] = {}
        self._codec_config = codec_config
        self._seen_keyframe = False

    def decode(self, packet: VideoPacket) -> list[VideoFrame]:
        """Feed one packet; return the frames it completes (usually exactly one).

        Packets before the first keyframe cannot be decoded and are skipped.
        """
        if not self._seen_keyframe:
            if not packet.keyframe:
                return []
            self._seen_keyframe = True
            data = packet.data
            if self._codec_config and not has_parameter_sets(data):
                data = self._codec_config + data
        else:
            data = packet.data
        av_packet = av.Packet(data)
        av_packet.pts = packet.pts
        self._pending[packet.pts] = packet
        return self._collect(self._codec.decode(av_packet))

    def flush(self) -> list[VideoFrame]:
        """Return any frames the decoder still holds (call at the end of the stream)."""
        try:
            frames = self._codec.decode(None)
        except av.error.EOFError:
            frames = []
        return self._collect(frames)

    def _collect(self, frames: list[av.VideoFrame]) -> list[VideoFrame]:
        out = []
        for frame in frames:
            source = self._pending.pop(frame.pts, None) if frame.pts is not None else None
            if source is None:  # should not happen; keep the picture anyway
                continue
            out.append(
                VideoFrame(
                    index=source.frame_index,
                    pts=source.pts,
                    time_s=source.time_s,
                    image=frame.to_ndarray(format="rgb24"),
                    speaking=source.speaking,
                )
            )
        return out


def has_parameter_sets(data: bytes) -> bool:
    """Whether an Annex B access unit carries an SPS (NAL type 7)."""
    start = 0
    while True:
        start = data.find(b"\x00\x00\x01", start)
        if start < 0 or start + 3 >= len(data):
            return False
        if data[start + 3] & 0x1F == 7:
            return True
        start += 3
