"""H.264 encoding of rendered frames into Annex B access units."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedFrame:
    data: bytes  # one access unit, Annex B (SPS/PPS precede every keyframe)
    keyframe: bool


def _level_idc(width: int, height: int, fps: float) -> int:
    """Smallest H.264 level whose macroblock limits hold this format."""
    mbs = ((width + 15) // 16) * ((height + 15) // 16)
    rate = mbs * fps
    for level, max_fs, max_mbps in (
        (30, 1620, 40500),
        (31, 3600, 108000),
        (32, 5120, 216000),
        (40, 8192, 245760),
        (42, 8704, 522240),
        (50, 22080, 589824),
        (51, 36864, 983040),
    ):
        if mbs <= max_fs and rate <= max_mbps:
            return level
    return 52


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, start codes removed."""
    units, i, n = [], 0, len(data)
    starts = []
    while i < n - 2:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for j, s in enumerate(starts):
        end = starts[j + 1] - 3 if j + 1 < len(starts) else n
        unit = data[s:end]
        while unit.endswith(b"\x00") and j + 1 < len(starts):
            unit = unit[:-1]  # the zero of a 4-byte start code belongs to the next unit
        units.append(unit)
    return units


class H264Encoder:
    """Zero-latency H.264: one access unit out per frame in, no B-frames, no look-ahead.

    Constrained baseline profile so that browsers, OBS and LiveKit all decode it.
    Uses h264_nvenc when a GPU encoder opens, else libx264 (ultrafast).
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        bitrate_kbps: int = 0,
        keyframe_interval: int = 0,
        prefer_hardware: bool = False,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs an even width and height; got {width}x{height}")
        self.width, self.height = width, height
        self.fps = Fraction(fps).limit_denominator(1001)
        self.keyframe_interval = keyframe_interval or max(1, round(2 * fps))
        self.bitrate_kbps = bitrate_kbps or self._default_bitrate(width, height, fps)
        self.level = _level_idc(width, height, fps)
        self._context = self._open(prefer_hardware)
        self._index = 0
        self._force_key = False
        self.codec_config = b""

    @staticmethod
    def _default_bitrate(width: int, height: int, fps: float) -> int:
        # ~0.12 bits per pixel: clean talking heads at 480p25 are ~1.2 Mbit/s.
        return max(300, int(width * height * fps * 0.12 / 1000))

    def _open(self, prefer_hardware: bool) -> av.VideoCodecContext:
        if prefer_hardware:
            try:
                return self._configure("h264_nvenc")
            except Exception as exc:  # no GPU, no driver: fall back to the CPU encoder
                log.info("h264_nvenc unavailable (%s); encoding with libx264", exc)
        return self._configure("libx264")

    def _configure(self, codec_name: str) -> av.VideoCodecContext:
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(codec_name, "w"))
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = 1 / self.fps
        ctx.framerate = self.fps
        ctx.gop_size = self.keyframe_interval
        ctx.max_b_frames = 0
        ctx.bit_rate = self.bitrate_kbps * 1000
        if codec_name == "libx264":
            kbps = self.bitrate_kbps
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "profile": "baseline",
                "x264-params": (
                    f"keyint={self.keyframe_interval}:min-keyint={self.keyframe_interval}:"
                    f"scenecut=0:repeat-headers=1:forced-idr=1:level={self.level / 10:.1f}:"
                    f"vbv-maxrate={kbps * 2}:vbv-bufsize={kbps}:threads=1:sliced-threads=0"
                ),
            }
        else:
            ctx.options = {"preset": "p1", "tune": "ull", "zerolatency": "1", "profile": "baseline"}
        ctx.open()
        return ctx

    @property
    def codec_name(self) -> str:
        return self._context.name

    @property
    def codec_string(self) -> str:
        """RFC 6381 name for constrained baseline at this level, e.g. avc1.42c01e."""
        return f"avc1.42c0{self.level:02x}"

    def probe_codec_config(self) -> bytes:
        """SPS and PPS before the first frame: a twin encoder's first keyframe carries the same ones."""
        if not self.codec_config:
            twin = H264Encoder(self.width, self.height, float(self.fps), self.bitrate_kbps, self.keyframe_interval)
            twin.encode(np.zeros((self.height, self.width, 3), np.uint8))
            twin.close()
            return twin.codec_config
        return self.codec_config

    def force_keyframe(self) -> None:
        """Make the next frame an IDR (after a drop or a discarded frame)."""
        self._force_key = True

    def encode(self, rgb: np.ndarray) -> EncodedFrame:
        """Encode one RGB frame of the configured size; returns its access unit."""
        i420: np.ndarray = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(i420.astype(np.uint8, copy=False), format="yuv420p")
        frame.pts = self._index
        if self._force_key or self._index == 0:
            frame.pict_type = av.video.frame.PictureType.I
            self._force_key = False
        self._index += 1
        packets = self._context.encode(frame)
        data = b"".join(bytes(p) for p in packets)
        keyframe = any(p.is_keyframe for p in packets)
        if keyframe and not self.codec_config:
            self.codec_config = b"".join(
                b"\x00\x00\x00\x01" + u for u in split_annexb(data) if u and (u[0] & 0x1F) in (7, 8)
            )
        return EncodedFrame(data, keyframe)

    def close(self) -> None:
        try:
            self._context.encode(None)
        except Exception:
            pass
