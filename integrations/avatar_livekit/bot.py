"""`avatar-livekit bot`: join a room and give one participant's voice a face.

The followed participant's microphone drives the avatar: the voice gate every edge shares
(avatar_client.voice_gate) cuts it into turns, word onsets kept, and the avatar listens in
between. The bot publishes the
video, and with `publish_audio` the voice too, in sync with the face (listeners should then
mute the original). Renders in this process (CPU portrait engine) or on a node.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from avatar_client.voice_gate import VoiceGate
from livekit import rtc

from .frames import Renderer
from .room_avatar import RoomAvatar
from .room_session import RoomSession

log = logging.getLogger(__name__)

FOLLOW_RATE = 48000


class VoiceFollower:
    """Turns a stream of someone's audio frames into avatar turns."""

    def __init__(self, renderer: Renderer, gate: VoiceGate | None = None) -> None:
        self.renderer = renderer
        self.gate = gate or VoiceGate()
        self._ids = itertools.count(1)
        self._turn: str | None = None
        self.turns = 0

    async def follow(self, frames: AsyncIterator[rtc.AudioFrame]) -> None:
        try:
            async for frame in frames:
                await self.hear(frame)
        finally:
            await self.end()

    async def hear(self, frame: rtc.AudioFrame) -> None:
        interleaved = np.frombuffer(frame.data, np.int16).reshape(-1, frame.num_channels)
        mono = np.rint(interleaved.mean(axis=1)).astype(np.int16)
        step = self.gate.feed(mono, frame.sample_rate)
        if step.opens:
            self._turn = f"voice-{next(self._ids)}"
            self.turns += 1
        if self._turn is None or not step.chunks:
            return
        await self.renderer.push_speech(np.concatenate(step.chunks).tobytes(), frame.sample_rate, 1, self._turn)
        if step.closes:
            await self.end()

    async def end(self) -> None:
        turn, self._turn = self._turn, None
        self.gate.reset()
        if turn is not None:
            await self.renderer.end_turn(turn)


async def _frames(stream: rtc.AudioStream) -> AsyncIterator[rtc.AudioFrame]:
    async for event in stream:
        yield event.frame


class RoomBot:
    """In a room: follow `identity`'s microphone with an avatar."""

    def __init__(self, renderer: Renderer, follow: str, *, publish_audio: bool = False,
                 gate: VoiceGate | None = None) -> None:
        self.follow_identity = follow
        self.avatar = RoomAvatar(renderer, publish_audio=publish_audio)
        self.follower = VoiceFollower(renderer, gate)
        self._listening: asyncio.Task[None] | None = None
        self._room: Any = None

    async def joined(self, room: Any, first: bool) -> None:
        if first:
            await self.avatar.start(room)
        else:
            await self.avatar.attach(room)
        self._room = room
        room.on("track_published", self._on_published)
        room.on("track_subscribed", self._on_subscribed)
        participant = room.remote_participants.get(self.follow_identity)
        if participant is not None:
            for publication in participant.track_publications.values():
                self._on_published(publication, participant)
                if publication.track is not None:
                    self._on_subscribed(publication.track, publication, participant)

    def _on_published(self, publication: Any, participant: Any) -> None:
        if participant.identity == self.follow_identity and publication.source == rtc.TrackSource.SOURCE_MICROPHONE:
            publication.set_subscribed(True)

    def _on_subscribed(self, track: Any, publication: Any, participant: Any) -> None:
        if participant.identity != self.follow_identity or publication.source != rtc.TrackSource.SOURCE_MICROPHONE:
            return
        if self._listening is not None:
            self._listening.cancel()
        stream = rtc.AudioStream(track, sample_rate=FOLLOW_RATE, num_channels=1)
        self._listening = asyncio.create_task(self._listen(stream))

    async def _listen(self, stream: rtc.AudioStream) -> None:
        try:
            await self.follower.follow(_frames(stream))
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
        await self.avatar.aclose()


async def run_bot(session: RoomSession, bot: RoomBot) -> str:
    try:
        stay = asyncio.ensure_future(session.run())
        stopped = asyncio.ensure_future(bot.avatar.stopped.wait())
        await asyncio.wait({stay, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stay, stopped):
            task.cancel()
        results = await asyncio.gather(stay, stopped, return_exceptions=True)
        if isinstance(results[0], BaseException) and not isinstance(results[0], asyncio.CancelledError):
            raise results[0]
        return results[0] if isinstance(results[0], str) else "the avatar stopped"
    finally:
        await bot.aclose()
