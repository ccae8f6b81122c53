"""Writing a session to an MP4 file: the node's H.264 as is, plus its speech audio as AAC."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from .decode import has_parameter_sets
from .events import AudioPacket, Event, SessionReady, VideoPacket


class Mp4Writer:
    """Mux a session's packets into an MP4 that ordinary players open.

    Video packets are stored without re-encoding (avc1); speech audio is encoded to AAC.
    Both tracks take their timestamps from the packets' pts, so audio and video stay on
    the node's one clock. The first keyframe becomes time zero; anything before it is
    dropped (a file cannot start mid-GOP).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        clock_rate: int,
        codec_config: bytes = b"",
        audio_bitrate: int = 128_000,
    ) -> None:
        self.path = Path(path)
        self.clock_rate = clock_rate
        self._codec_config = codec_config
        self._time_base = Fraction(1, clock_rate)
        # faststart moves the index to the front so players can start before the end arrives.
        self._rate = Fraction(fps).limit_denominator(1001)
        self._container = av.open(
            str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        # Pre-encoded video: no codec context, the muxer takes the H.264 as it comes. With no
        # extradata, FFmpeg's MP4 muxer builds the avcC box from the first packet's SPS/PPS
        # and rewrites Annex B start codes into length prefixes.
        self._video = self._container.add_mux_stream(
            "h264", rate=self._rate, width=width, height=height
        )
        self._video.time_base = self._time_base
        self._audio = self._container.add_stream("aac", rate=clock_rate, layout="mono")
        self._audio.bit_rate = audio_bitrate
        self._audio.time_base = self._time_base
        self._base_pts: int | None = None
        self._last_video_dts = -1
        self._held_audio: list[AudioPacket] = []
        self._next_audio_pts: int | None = None
        self._closed = False
        self.frames_written = 0
        self.audio_samples_written = 0

    @classmethod
    def for_session(cls, path: str | Path, ready: SessionReady) -> Mp4Writer:
        """A writer set up for the format a session announced."""
        return cls(
            path,
            ready.width,
            ready.height,
            ready.fps,
            ready.clock_rate,
            codec_config=ready.codec_config,
        )

    def write(self, event: Event) -> None:
        """Write a video or audio packet; other events are ignored."""
        if isinstance(event, VideoPacket):
            self.write_video(event)
        elif isinstance(event, AudioPacket):
            self.write_audio(event)

    def write_video(self, packet: VideoPacket) -> None:
        if self._base_pts is None:
            if not packet.keyframe:
                return
            self._base_pts = packet.pts
            held, self._held_audio = self._held_audio, []
            for audio in held:
                self.write_audio(audio)
        data = packet.data
        if self.frames_written == 0 and self._codec_config and not has_parameter_sets(data):
            data = self._codec_config + data
        pts = packet.pts - self._base_pts
        if pts < 0:
            return
        # The node sends no B-frames, so decode order is presentation order.
        dts = max(pts, self._last_video_dts + 1)
        self._last_video_dts = dts
        av_packet = av.Packet(data)
        av_packet.pts = pts
        av_packet.dts = dts
        av_packet.duration = packet.duration or round(self.clock_rate / float(self._rate))
        av_packet.time_base = self._time_base
        av_packet.is_keyframe = packet.keyframe
        av_packet.stream = self._video
        self._container.mux(av_packet)
        self.frames_written += 1

    def write_audio(self, packet: AudioPacket) -> None:
        if self._base_pts is None:
            self._held_audio.append(packet)
            return
        samples = packet.samples
        pts = packet.pts - self._base_pts
        if pts < 0:  # starts before the first keyframe: keep only the part after it
            samples = samples[-pts:]
            pts = 0
        expected = self._next_audio_pts if self._next_audio_pts is not None else 0
        if pts < expected:  # never write the same instant twice
            samples = samples[expected - pts :]
        elif pts > expected:  # a hole in the audio: fill it with silence so the track stays on the clock
            samples = np.concatenate([np.zeros(pts - expected, dtype=np.int16), samples])
        pts = expected
        if samples.size == 0:
            return
        if packet.sample_rate != self.clock_rate:
            raise ValueError(
                f"audio at {packet.sample_rate} Hz does not match the clock rate {self.clock_rate}"
            )
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.clock_rate
        frame.pts = pts
        frame.time_base = self._time_base
        self._container.mux(self._audio.encode(frame))
        self._next_audio_pts = pts + samples.size
        self.audio_samples_written += samples.size

    def close(self) -> None:
        """Flush the audio encoder and finish the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.audio_samples_written:
                self._container.mux(self._audio.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
