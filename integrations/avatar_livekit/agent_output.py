"""The agent's audio output in local mode: its speech goes straight into the in-process renderer.

Each segment the agent captures (up to its `flush`) becomes one renderer turn; the
renderer's turn events become the agent's playback events, with the position that was
actually published. After `clear_buffer` the rest of the segment being captured is
dropped, so audio never leaks past an interrupt.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from livekit import rtc
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities

from .room_avatar import RoomAvatar

log = logging.getLogger(__name__)


class AvatarAudioOutput(AudioOutput):
    def __init__(self, avatar: RoomAvatar, *, label: str = "AvatarNode") -> None:
        super().__init__(label=label, capabilities=AudioOutputCapabilities(pause=False), next_in_chain=None)
        self._avatar = avatar
        self._renderer = avatar.renderer
        self._ids = itertools.count(1)
        self._segment: str | None = None  # the turn receiving this segment's audio
        self._dropping = False  # cleared mid-segment: drop its audio until the next flush
        self._ending: asyncio.Future[None] | None = None
        self._waiting: set[str] = set()  # turns that still owe the agent a playback_finished
        avatar.on_started = self._turn_started
        avatar.on_finished = self._turn_finished

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._dropping:
            return
        if self._ending is not None:  # the previous segment's end goes first
            await asyncio.shield(self._ending)
        if self._segment is None:
            self._segment = f"speech-{next(self._ids)}"
            self._waiting.add(self._segment)
        try:
            await self._renderer.push_speech(bytes(frame.data), frame.sample_rate, frame.num_channels, self._segment)
        except Exception as exc:  # bad audio or a full queue: this segment is lost, the session goes on
            log.warning("avatar: speech dropped (%s)", exc)
            self._dropping = True
            turn, self._segment = self._segment, None
            self._renderer.interrupt()  # ends the turn if part of it got in
            self._turn_finished(turn, 0.0, True)

    def flush(self) -> None:
        super().flush()
        self._dropping = False
        turn, self._segment = self._segment, None
        if turn is not None:
            self._ending = asyncio.ensure_future(self._renderer.end_turn(turn))

    def clear_buffer(self) -> None:
        if self._segment is not None:
            self._segment = None
            self._dropping = True
        self._avatar.clear()

    def _turn_started(self, turn_id: str) -> None:
        if turn_id in self._waiting:
            self.on_playback_started(created_at=time.time())

    def _turn_finished(self, turn_id: str, position_s: float, interrupted: bool) -> None:
        if turn_id in self._waiting:
            self._waiting.discard(turn_id)
            self.on_playback_finished(playback_position=position_s, interrupted=interrupted)
