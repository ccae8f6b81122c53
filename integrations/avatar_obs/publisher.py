"""Publishing the avatar: the node's H.264 remuxed as is, speech as AAC, to MPEG-TS/UDP or RTMP.

The muxer runs on its own thread behind a bounded queue, so a slow or vanished network peer
never stalls the frames. Timestamps come from the output timeline (frame k at k/fps), never
from the wall clock, so the stream has a constant frame rate and audio that cannot drift.
When an RTMP server goes away the publisher reconnects with back-off and starts again at the
next keyframe; UDP has no connection to lose.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import numpy as np
from avatar_client.decode import has_parameter_sets
from avatar_client.feed_items import FeedFormat

from .pictures import SentPictures

log = logging.getLogger(__name__)

#: Frames waiting for the muxer. About 2 s at 25 fps: past that the peer is not keeping up and
#: frames are dropped up to the next keyframe (counted), so latency stays bounded.
QUEUE_FRAMES = 50
#: How long one network write may block before the connection counts as broken.
NETWORK_TIMEOUT_S = 5.0
#: Back-off between reconnection attempts to an RTMP server.
RETRY_MIN_S, RETRY_MAX_S = 0.5, 8.0


@dataclass(frozen=True)
class Destination:
    """Where the stream goes and how it is muxed."""

    url: str  # what FFmpeg opens for writing
    format: str  # "mpegts" or "flv"
    connected: bool  # True for RTMP (a connection that can break), False for UDP

    def describe(self) -> str:
        kind = "RTMP" if self.format == "flv" else "MPEG-TS"
        return f"{kind} to {redact(self.url).split('?')[0]}"


def redact(url: str) -> str:
    """The URL with an RTMP stream key hidden: keys are secrets and logs are shared."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme.startswith("rtmp"):
        return url
    path = parts.path.rstrip("/")
    app, _, key = path.rpartition("/")
    if app and key:
        path = f"{app}/{key[:2]}…"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def udp_destination(host: str, port: int) -> Destination:
    if not 0 < port < 65536:
        raise ValueError(f"UDP port must be 1-65535, not {port}")
    # 7 TS packets per datagram: the usual size that never fragments.
    return Destination(f"udp://{host}:{port}?pkt_size=1316", "mpegts", connected=False)


def rtmp_destination(url: str) -> Destination:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("rtmp", "rtmps") or not parts.netloc or parts.path.count("/") < 2:
        raise ValueError(
            f"--rtmp wants rtmp://HOST[:PORT]/APP/STREAM_KEY (e.g. rtmp://127.0.0.1/live/avatar), not {redact(url)!r}"
        )
    return Destination(url, "flv", connected=True)


@dataclass(frozen=True)
class StreamFrame:
    """One frame on the output timeline."""

    index: int  # frame k of the output stream; pts = k / fps
    encoded: bytes  # H.264 access unit, Annex B
    keyframe: bool
    audio: np.ndarray  # int16 mono at the clock rate for this frame (shorter: padded with silence)
    idle: bool = False  # made here while the node was unavailable


@dataclass
class PublisherStats:
    frames_sent: int = 0
    frames_dropped: int = 0  # queue full or waiting for a keyframe after a reconnect
    connections: int = 0  # successful opens (1 + reconnects)
    interruptions: int = 0  # connections lost
    connected: bool = False
    last_error: str = ""


class StreamPublisher:
    """Mux `StreamFrame`s into `destination` from a background thread.

    `send()` never blocks. `on_connected(count)` is called (on the publisher thread) each time
    a connection opens, the first time with 1; a host uses later calls to tell OBS to reopen.
    """

    def __init__(
        self,
        destination: Destination,
        fmt: FeedFormat,
        *,
        audio_bitrate: int = 128_000,
        pictures: SentPictures | None = None,
        on_connected: Callable[[int], None] | None = None,
    ) -> None:
        self.destination = destination
        self.format = fmt
        self.stats = PublisherStats()
        self._audio_bitrate = audio_bitrate
        self._pictures = pictures
        self._on_connected = on_connected
        self._queue: queue.Queue[StreamFrame | None] = queue.Queue(QUEUE_FRAMES)
        self._stop = threading.Event()
        self._need_keyframe = True  # a stream must start with one
        # Time zero of the stream. It stays put across reconnections, so a server or player that
        # outlives a broken connection sees timestamps go on rather than jump back to zero.
        self._origin: int | None = None
        self._thread = threading.Thread(target=self._run, name="avatar-obs-publisher", daemon=True)
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def failure(self) -> BaseException | None:
        """An unexpected error that stopped the publisher thread, if any."""
        return self._failure

    def send(self, frame: StreamFrame) -> None:
        """Queue a frame; if the muxer is behind, drop it (and the rest up to a keyframe)."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.stats.frames_dropped += 1
            self._need_keyframe = True

    def close(self, timeout: float = NETWORK_TIMEOUT_S + 2) -> None:
        """Stop and finish the stream. Idempotent; safe from any thread."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ publisher thread

    def _run(self) -> None:
        retry = RETRY_MIN_S
        try:
            while not self._stop.is_set():
                first = self._next_keyframe()
                if first is None:
                    return
                muxer = self._open(first)
                if muxer is None:
                    self.stats.frames_dropped += 1
                    self._wait_dropping(retry)
                    retry = min(retry * 2, RETRY_MAX_S)
                    continue
                retry = RETRY_MIN_S
                self.stats.connections += 1
                self.stats.connected = True
                if self._on_connected is not None:
                    self._on_connected(self.stats.connections)
                try:
                    self._pump(muxer, first)
                finally:
                    self.stats.connected = False
                    muxer.close()
        except BaseException as error:  # keep the reason for the owner; never die silently
            self._failure = error
            log.exception("the publisher stopped")

    def _next_keyframe(self) -> StreamFrame | None:
        """The next keyframe in the queue (a stream must start with one); None when stopping."""
        while True:
            frame = self._queue.get()
            if frame is None or self._stop.is_set():
                return None
            if frame.keyframe:
                return frame
            self.stats.frames_dropped += 1

    def _open(self, first: StreamFrame) -> _Muxer | None:
        try:
            if self.destination.connected:
                check_rtmp_server(self.destination.url, NETWORK_TIMEOUT_S)
            return _Muxer(self.destination, self.format, self._audio_bitrate, first.encoded)
        except (av.error.FFmpegError, OSError, ValueError) as error:
            message = f"cannot open {self.destination.describe()}: {error_text(error)}"
            if message != self.stats.last_error:
                log.warning("%s; retrying", message)
            self.stats.last_error = message
            return None

    def _pump(self, muxer: _Muxer, first: StreamFrame) -> None:
        """Write frames, from `first` on, until the connection breaks or the publisher stops."""
        self._need_keyframe = False
        frame: StreamFrame | None = first
        while frame is not None and not self._stop.is_set():
            if self._need_keyframe and not frame.keyframe:  # frames were dropped: resume at a keyframe
                self.stats.frames_dropped += 1
            else:
                self._need_keyframe = False
                if self._origin is None:
                    self._origin = frame.index
                try:
                    muxer.write(frame, self._origin)
                except (av.error.FFmpegError, OSError) as error:
                    self.stats.interruptions += 1
                    self.stats.last_error = f"stream interrupted: {error_text(error)}"
                    log.warning("%s; reconnecting to %s", self.stats.last_error, self.destination.describe())
                    return
                self.stats.frames_sent += 1
                if frame.keyframe and self._pictures is not None:
                    self._pictures.add_keyframe(frame.encoded, self.format.codec_config)
            frame = self._queue.get()

    def _wait_dropping(self, seconds: float) -> None:
        """Sleep before the next attempt, discarding frames that cannot be sent meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                frame = self._queue.get(timeout=left)
            except queue.Empty:
                return
            if frame is None:
                return
            self.stats.frames_dropped += 1


def _probe(keyframe: bytes, fmt: FeedFormat) -> av.container.InputContainer:
    """The stream as FFmpeg sees it from one keyframe: size, profile, and SPS/PPS as extradata.

    The output stream copies it: FLV must carry the decoder configuration in its header,
    before any frame, or readers see "no configuration" and may refuse the whole stream.
    """
    data = keyframe if has_parameter_sets(keyframe) or not fmt.codec_config else fmt.codec_config + keyframe
    probe = cast(av.container.InputContainer, av.open(io.BytesIO(data), format="h264"))
    if not probe.streams.video or not probe.streams.video[0].codec_context.extradata:
        probe.close()
        raise ValueError("the first keyframe carries no SPS/PPS")
    return probe


def check_rtmp_server(url: str, timeout: float) -> None:
    """Connect and start the RTMP handshake with a time limit; raise OSError if the server is
    unreachable or silent.

    FFmpeg's RTMP connect and handshake run while holding Python's GIL and with no timeout: a
    black-holed address or a server that accepts but never answers would freeze the whole
    command (frames, controls, OBS watchdog), not just this thread. Checking here first keeps
    those cases to a logged retry.
    """
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "rtmps"
    port = parts.port or (443 if secure else 1935)
    with socket.create_connection((parts.hostname or "", port), timeout=timeout) as connection:
        if secure:
            return  # the TLS handshake comes first there; reaching the port is what can be checked
        connection.settimeout(timeout)
        # C0 (version 3) and C1 (time, zero, 1528 bytes of anything): a server answers S0 and S1.
        connection.sendall(b"\x03" + bytes(8) + os.urandom(1528))
        received = 0
        deadline = time.monotonic() + timeout
        while received < 1 + 1536:
            connection.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = connection.recv(4096)
            except TimeoutError:
                data = None
            if not data:
                raise OSError(
                    f"the server accepted the connection but did not answer the RTMP handshake within "
                    f"{timeout:g} s (is it an RTMP server?)"
                )
            received += len(data)


def error_text(error: BaseException) -> str:
    if isinstance(error, av.error.FFmpegError):
        return error.strerror or str(error)
    return str(error) or type(error).__name__


class _Muxer:
    """One open output: video copied through, audio encoded to AAC, both on the frame clock."""

    def __init__(
        self, destination: Destination, fmt: FeedFormat, audio_bitrate: int, first_keyframe: bytes
    ) -> None:
        self._fmt = fmt
        self._time_base = Fraction(1, fmt.clock_rate)
        # flush_packets: each frame goes out as it is muxed. max_interleave_delta: if one track
        # stalls, the other is held back at most half a second instead of FFmpeg's ten.
        options = {"flush_packets": "1", "max_interleave_delta": "500000"}
        if destination.format == "mpegts":
            options["max_delay"] = "0"  # PCR and PES go out with the frame, not up to 0.7 s later
        self._container = av.open(
            destination.url, mode="w", format=destination.format, options=options, timeout=NETWORK_TIMEOUT_S
        )
        try:
            with _probe(first_keyframe, fmt) as probe:
                self._video = self._container.add_stream_from_template(probe.streams.video[0])
            self._video.time_base = self._time_base
            self._audio = self._container.add_stream("aac", rate=fmt.clock_rate, layout="mono")
            self._audio.bit_rate = audio_bitrate
            self._audio.time_base = self._time_base
            # Write the header now: for RTMP this is when the connection is really made, so a
            # server that is down fails here (and is retried with back-off), not at the first frame.
            self._container.start_encoding()
        except BaseException:
            self._container.close()
            raise
        self._audio_cursor: int | None = None  # the next audio sample's pts
        self._frame_ticks = round(fmt.clock_rate / fmt.fps)
        self._first = True

    def write(self, frame: StreamFrame, origin: int) -> None:
        """Mux one frame; `origin` is the index of the publisher's first frame (time zero)."""
        pts = self._fmt.pts(frame.index - origin)
        if self._audio_cursor is None:
            self._audio_cursor = pts
        data = frame.encoded
        if self._first and self._fmt.codec_config and not has_parameter_sets(data):
            data = self._fmt.codec_config + data
        self._first = False
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.duration = self._frame_ticks
        packet.time_base = self._time_base
        packet.is_keyframe = frame.keyframe
        packet.stream = self._video
        self._write_audio(pts, frame.audio)
        self._container.mux(packet)

    def _write_audio(self, pts: int, samples: np.ndarray) -> None:
        """Audio without holes from the first frame on: silence fills gaps, overlaps are trimmed."""
        assert self._audio_cursor is not None
        if pts > self._audio_cursor:
            samples = np.concatenate([np.zeros(pts - self._audio_cursor, np.int16), samples])
        elif pts < self._audio_cursor:
            samples = samples[self._audio_cursor - pts :]
        if samples.size == 0:
            return
        audio = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        audio.sample_rate = self._fmt.clock_rate
        audio.pts = self._audio_cursor
        audio.time_base = self._time_base
        self._audio_cursor += samples.size
        for packet in self._audio.encode(audio):
            self._container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._audio.encode(None):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError, ValueError):
            pass  # the peer is gone; what was sent is what it has
        finally:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError):
                pass
