"""The avatar's end of LiveKit's agent-to-avatar protocol (what `DataStreamAudioOutput` speaks).

- Speech: one byte stream per segment on topic `lk.audio_stream` from the agent, with
  `sample_rate` / `num_channels` attributes, raw s16le; the stream's end ends the segment.
- `lk.clear_buffer` (RPC from the agent, empty payload): stop now.
- `lk.playback_finished` (RPC to the agent): `{"playback_position": s, "interrupted": b}`,
  once per segment; `lk.playback_started` when its first frame is published, if the agent
  listens for it.

A segment also ends when its stream is superseded by the next one, when the agent leaves,
or after `idle_timeout_s` without data (a trailer lost on the way must not wedge the
avatar). RPCs from anyone but the agent are refused. Failing to reach the agent is logged,
never fatal: the avatar keeps its face on while the agent reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc

log = logging.getLogger(__name__)

AUDIO_STREAM_TOPIC = "lk.audio_stream"
RPC_CLEAR_BUFFER = "lk.clear_buffer"
RPC_PLAYBACK_FINISHED = "lk.playback_finished"
RPC_PLAYBACK_STARTED = "lk.playback_started"
IDLE_TIMEOUT_S = 10.0
#: Waits between attempts to reach the agent (about 30 s in all).
RPC_RETRY_DELAYS_S = (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass
class Segment:
    turn_id: str
    sample_rate: int
    channels: int
    cleared: bool = False
    pushed: bool = False  # some audio reached the renderer
    reported: bool = False
    remainder: bytes = field(default=b"", repr=False)  # half a sample held for the next chunk


class AgentAudioLink:
    def __init__(
        self,
        agent_identity: str,
        *,
        push_speech: Callable[[bytes, int, int, str], Awaitable[None]],
        end_turn: Callable[[str], Awaitable[None]],
        clear: Callable[[], None],
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.agent_identity = agent_identity
        self._push_speech = push_speech
        self._end_turn = end_turn
        self._clear = clear
        self.idle_timeout_s = idle_timeout_s
        self._room: Any = None
        self._ids = itertools.count(1)
        self._readers: asyncio.Queue[Any] = asyncio.Queue()
        self._superseded = asyncio.Event()
        self._current: Segment | None = None
        self._segments: dict[str, Segment] = {}  # by turn id, until reported
        self._outgoing: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._started_supported = True
        self._tasks: list[asyncio.Task[None]] = []
        #: Counters, for tests and logs.
        self.clears = 0
        self.segments_received = 0

    # ------------------------------------------------------------------ room

    def attach(self, room: Any) -> None:
        """Listen on `room` (again, after a reconnect)."""
        self.detach()
        self._room = room
        room.register_byte_stream_handler(AUDIO_STREAM_TOPIC, self._on_stream)
        room.local_participant.register_rpc_method(RPC_CLEAR_BUFFER, self._on_clear_buffer)
        room.on("participant_disconnected", self._on_participant_disconnected)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._read_segments(), name="avatar-link-segments"),
                asyncio.create_task(self._send_rpcs(), name="avatar-link-rpcs"),
            ]

    def detach(self) -> None:
        room, self._room = self._room, None
        if room is None:
            return
        room.unregister_byte_stream_handler(AUDIO_STREAM_TOPIC)
        room.off("participant_disconnected", self._on_participant_disconnected)
        try:
            room.local_participant.unregister_rpc_method(RPC_CLEAR_BUFFER)
        except Exception:  # a room already gone has nothing left to unregister
            pass

    async def aclose(self) -> None:
        self.detach()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while not self._readers.empty():
            _close_reader(self._readers.get_nowait())

    # ------------------------------------------------------------------ incoming

    def _on_stream(self, reader: Any, participant_identity: str) -> None:
        if participant_identity != self.agent_identity:
            log.warning("ignoring an audio stream from %r (this avatar speaks for %r)",
                        participant_identity, self.agent_identity)
            _close_reader(reader)
            return
        if self._current is not None:
            self._superseded.set()  # the open segment's trailer was lost: the agent never overlaps them
        self._readers.put_nowait(reader)

    def _on_clear_buffer(self, data: rtc.RpcInvocationData) -> str:
        if data.caller_identity != self.agent_identity:
            log.warning("refusing lk.clear_buffer from %r", data.caller_identity)
            return "reject"
        self.clears += 1
        if self._current is not None:
            self._current.cleared = True
        self._clear()
        return "ok"

    def _on_participant_disconnected(self, participant: Any) -> None:
        if participant.identity == self.agent_identity and self._current is not None:
            self._superseded.set()  # its open stream will never close

    async def _read_segments(self) -> None:
        while True:
            reader = await self._readers.get()
            self._superseded.clear()
            try:
                await self._read_segment(reader)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading an audio segment failed")
            finally:
                _close_reader(reader)
                self._current = None

    async def _read_segment(self, reader: Any) -> None:
        attributes = reader.info.attributes or {}
        try:
            rate, channels = int(attributes["sample_rate"]), int(attributes["num_channels"])
            if rate <= 0 or channels <= 0:
                raise ValueError
        except (KeyError, ValueError):
            log.error("an audio stream came without valid sample_rate / num_channels attributes: %s", attributes)
            rate, channels = 0, 0
        segment = Segment(f"segment-{next(self._ids)}", rate, channels)
        self.segments_received += 1
        self._segments[segment.turn_id] = segment
        self._current = segment
        chunks = reader.__aiter__()
        superseded = asyncio.ensure_future(self._superseded.wait())
        try:
            while True:
                next_chunk = asyncio.ensure_future(chunks.__anext__())
                done, _ = await asyncio.wait({next_chunk, superseded}, timeout=self.idle_timeout_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if next_chunk not in done:
                    next_chunk.cancel()
                    why = "superseded" if superseded in done else f"idle for {self.idle_timeout_s:g} s"
                    log.warning("audio segment ended without its trailer (%s)", why)
                    break
                try:
                    chunk = next_chunk.result()
                except StopAsyncIteration:
                    break
                except Exception as exc:  # aborted by the sender
                    log.warning("audio stream aborted: %s", exc)
                    break
                await self._audio(segment, chunk)
        finally:
            superseded.cancel()
        await self._segment_end(segment)

    async def _audio(self, segment: Segment, chunk: bytes) -> None:
        if segment.cleared or not segment.sample_rate:
            return
        data = segment.remainder + chunk
        whole = len(data) - len(data) % (2 * segment.channels)
        segment.remainder = data[whole:]
        if whole:
            segment.pushed = True
            await self._push_speech(data[:whole], segment.sample_rate, segment.channels, segment.turn_id)

    async def _segment_end(self, segment: Segment) -> None:
        if segment.pushed and not segment.cleared:
            await self._end_turn(segment.turn_id)
        elif not segment.pushed:
            # Nothing of it reached the renderer: it finishes here.
            self.turn_finished(segment.turn_id, 0.0, segment.cleared)

    # ------------------------------------------------------------------ outgoing

    def turn_started(self, turn_id: str) -> None:
        if turn_id in self._segments and self._started_supported:
            self._outgoing.put_nowait((RPC_PLAYBACK_STARTED, ""))

    def turn_finished(self, turn_id: str, position_s: float, interrupted: bool) -> None:
        segment = self._segments.pop(turn_id, None)
        if segment is None or segment.reported:
            return
        segment.reported = True
        payload = json.dumps({"playback_position": position_s, "interrupted": interrupted,
                              "synchronized_transcript": None})
        self._outgoing.put_nowait((RPC_PLAYBACK_FINISHED, payload))

    async def _send_rpcs(self) -> None:
        while True:
            method, payload = await self._outgoing.get()
            await self._deliver(method, payload)

    async def _deliver(self, method: str, payload: str) -> None:
        """Send one RPC to the agent. An agent that is away (reconnecting) gets it when it is back,
        for up to about half a minute: it waits for playback_finished before it speaks again."""
        for delay in (*RPC_RETRY_DELAYS_S, None):
            room = self._room
            try:
                if room is None or not room.isconnected():
                    raise ConnectionError("the avatar is not in the room")
                await room.local_participant.perform_rpc(
                    destination_identity=self.agent_identity, method=method, payload=payload
                )
                return
            except rtc.RpcError as exc:
                if exc.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD:
                    if method == RPC_PLAYBACK_STARTED:
                        self._started_supported = False  # this agent does not ask for it
                    else:
                        log.warning("the agent %s does not take %s", self.agent_identity, method)
                    return
                error = exc.message
            except Exception as exc:
                error = str(exc)
            if delay is None:
                log.warning("%s did not reach %s: %s", method, self.agent_identity, error)
                return
            await asyncio.sleep(delay)


def _close_reader(reader: Any) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass
