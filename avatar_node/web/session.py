"""One WHEP session: an avatar stream, a peer connection sending its picture and voice,
and the browser's microphone coming back on the same connection.

The session ends, and returns its stream's slot, on every path: a DELETE, the peer
connection failing or closing (tab closed), the peer going silent (no RTCP from it for
`peer_timeout_s`: a browser that vanished without a word), a peer that never connects,
the stream ending (the node drains), or the server stopping. `aclose()` is idempotent
and cancellation-safe: the teardown runs to its end in a task of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from avatar_node.pipeline import AvatarStream, AVFrame, Ended, EndReason, Notice, Stats, TurnEvent, TurnKind

from .microphone import MicMode, MicrophoneRouter
from .tracks import AvatarAudioTrack, AvatarVideoTrack, SentClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionLimits:
    #: A peer that has not connected by then is given up on.
    connect_timeout_s: float = 20.0
    #: A connected peer that sends no RTCP (receiver reports) for this long is gone.
    peer_timeout_s: float = 6.0
    #: How often the watchdog looks.
    watch_interval_s: float = 0.5


class WebSession:
    def __init__(
        self,
        stream: AvatarStream,
        *,
        limits: SessionLimits = SessionLimits(),
        mic_mode: MicMode = "listen",
        on_closed: Callable[[WebSession], None] = lambda s: None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.stream = stream
        self.limits = limits
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: no outside STUN
        self.sent = SentClock()
        rate = stream.options.clock_rate
        self.video = AvatarVideoTrack(rate, self.sent)
        self.audio = AvatarAudioTrack(rate, self.sent)
        self.mic = MicrophoneRouter(stream, mic_mode)
        self.fps = stream.options.fps
        self.clock_rate = rate
        self.end_reason = ""
        self.last_stats: Stats | None = None
        self.turns: deque[dict[str, Any]] = deque(maxlen=8)
        self.speaking = False
        self._frame_times: deque[float] = deque(maxlen=50)
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task[None]] = set()
        self._teardown: asyncio.Future[None] | None = None
        self._connected_at: float | None = None
        self.created_at = time.monotonic()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # ------------------------------------------------------------------ set-up

    async def answer(self, offer_sdp: str) -> str:
        """Take the browser's offer; the answer carries the avatar's audio and video."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        kinds = {t.kind for t in self.pc.getTransceivers()}
        if "video" not in kinds and "audio" not in kinds:
            raise ValueError("the offer has no audio or video section; offer to receive video and audio")
        if "video" in kinds:
            self.pc.addTrack(self.video)
        if "audio" in kinds:
            self.pc.addTrack(self.audio)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)  # gathers candidates: the answer is complete
        self._spawn(self._pump())
        self._spawn(self._watch())
        return self.pc.localDescription.sdp

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self.mic.run(track))

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._connected_at is None:
            self._connected_at = time.monotonic()
        elif state in ("failed", "closed"):
            self.close_soon(f"peer connection {state}")

    # ------------------------------------------------------------------ running

    async def _pump(self) -> None:
        """Every frame to both tracks at once; the rest into the session's state."""
        try:
            async for item in self.stream:
                if isinstance(item, AVFrame):
                    self.video.put(item)
                    self.audio.put(item)
                    self.speaking = item.speaking
                    self._frame_times.append(time.monotonic())
                elif isinstance(item, Stats):
                    self.last_stats = item
                elif isinstance(item, TurnEvent):
                    self.turns.append({"turn_id": item.turn_id, "kind": item.kind.value,
                                       "interrupted": item.interrupted, "played_ms": item.played_ms})
                elif isinstance(item, Notice):
                    log.info("session %s: %s", self.id[:8], item.message)
                elif isinstance(item, Ended):
                    self.close_soon(f"stream ended ({item.reason.value})")
                    return
            self.close_soon("stream ended")
        except Exception as exc:  # a PipelineError ends the stream: end the session with it
            self.close_soon(f"stream failed: {exc}")

    async def _watch(self) -> None:
        """End a peer that never connects, or that stopped sending RTCP (it vanished)."""
        limits = self.limits
        while True:
            await asyncio.sleep(limits.watch_interval_s)
            now = time.monotonic()
            if self._connected_at is None:
                if now - self.created_at > limits.connect_timeout_s:
                    self.close_soon(f"the peer did not connect within {limits.connect_timeout_s:g} s")
                    return
                continue
            heard = await self._last_heard()
            if now - max(heard, self._connected_at) > limits.peer_timeout_s:
                self.close_soon(f"no RTCP from the peer for {limits.peer_timeout_s:g} s")
                return

    async def _last_heard(self) -> float:
        """Monotonic time of the newest receiver report the peer sent about our tracks."""
        newest = 0.0
        for sender in self.pc.getSenders():
            report = await sender.getStats()
            for stats in report.values():
                if stats.type == "remote-inbound-rtp":
                    newest = max(newest, stats.timestamp.timestamp())
        if newest == 0.0:
            return 0.0
        return time.monotonic() - (time.time() - newest)

    # ------------------------------------------------------------------ control and stats

    def frames_per_second(self) -> float:
        times = self._frame_times
        if len(times) < 2 or times[-1] == times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def snapshot(self) -> dict[str, Any]:
        """The numbers the page's stats line shows (see the README for each one's meaning)."""
        s = self.last_stats
        sent = self.sent
        offset = sent.av_offset_ms()
        av_offset_ms = None if offset is None else round(offset, 1)
        return {
            "session": self.id,
            "connection": self.pc.connectionState,
            "fps": round(self.frames_per_second(), 1),
            "frames_sent": s.frames_sent if s else 0,
            "frames_dropped": (s.frames_dropped if s else 0) + self.video.dropped,
            "frames_skipped": s.frames_skipped if s else 0,
            "node_lag_ms": round(s.lag_ms, 1) if s else 0.0,
            "encoder_wait_ms": round(sent.video_wait_ms, 1),
            "sender_av_offset_ms": av_offset_ms,
            "speaking": self.speaking,
            "queued_speech_ms": s.queued_speech_ms if s else 0,
            "mic": {
                "mode": self.mic.mode,
                "received_ms": round(self.mic.received_ms),
                "listen_ms": round(self.mic.listen_ms),
                "speech_ms": round(self.mic.speech_ms),
                "turns": self.mic.turns,
                "level_dbfs": round(self.mic.level_dbfs, 1),
            },
            "turns": list(self.turns),
        }

    @property
    def turn_started(self) -> bool:
        return any(t["kind"] == TurnKind.STARTED.value for t in self.turns)

    # ------------------------------------------------------------------ teardown

    @property
    def closed(self) -> bool:
        return self._teardown is not None

    def close_soon(self, why: str, reason: EndReason = EndReason.CLIENT_CANCELLED) -> None:
        if self._teardown is None:
            self.end_reason = why
            self._teardown = asyncio.ensure_future(self._close(reason))

    async def aclose(self, why: str = "closed", reason: EndReason = EndReason.CLIENT_CANCELLED) -> None:
        """End the session and release everything. Idempotent; the teardown finishes even if cancelled."""
        self.close_soon(why, reason)
        assert self._teardown is not None
        await asyncio.shield(self._teardown)

    async def _close(self, reason: EndReason) -> None:
        log.info("web session %s ends: %s", self.id[:8], self.end_reason)
        current = asyncio.current_task()
        try:
            self.video.stop()
            self.audio.stop()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
            with suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self.pc.close()
            for task in list(self._tasks):
                if task is not current:
                    with suppress(BaseException):
                        await task
        finally:
            try:
                await self.stream.aclose(reason)  # returns the session's slot on the node
            finally:
                self._on_closed(self)
