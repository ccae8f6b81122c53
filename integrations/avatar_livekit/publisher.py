"""Publishing rendered frames into a room: one audio and one video track through LiveKit's AV synchronizer.

Every frame goes in as exactly its own 1/fps of audio and its picture. The synchronizer
paces but does not align: audio plays from the source's queue, pictures are captured as
soon as they are pushed. A queue that filled up once (the event loop stalled, a burst
followed) would leave the voice behind the face for good, so each picture is handed over
when its own audio starts to play (now + what the audio queue holds), which keeps them
together within a frame whatever happened before. The tracks are published before the
first frame is captured and only once a real frame is ready, so a subscriber never sees
a blank or green picture, and idle video flows from the start.

An interrupt empties the synchronizer's queues, and drops the pictures from before it
that were still waiting for room or for their time (else up to two speaking pictures
followed it); `clear()` says how much speech that discarded, so the playback position
reported to the agent is what people heard.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import suppress
from typing import Any

import numpy as np
from livekit import rtc

from .frames import RenderedFrame, VideoFormat

log = logging.getLogger(__name__)

AUDIO_TRACK_NAME = "avatar_audio"
VIDEO_TRACK_NAME = "avatar_video"
#: Media queued ahead of the room: enough to ride out the event loop's jitter, short
#: enough that an interrupt is seen at once (the queues are emptied then anyway).
QUEUE_MS = 100
#: Frames remembered to account for what an interrupt discards (well over QUEUE_MS).
RECENT_FRAMES = 16


class TrackPublisher:
    def __init__(self, fmt: VideoFormat, *, publish_audio: bool = True, queue_ms: int = QUEUE_MS) -> None:
        self.format = fmt
        self.publish_audio = publish_audio
        self.audio_source = rtc.AudioSource(fmt.sample_rate, 1, queue_size_ms=queue_ms)
        self.video_source = rtc.VideoSource(fmt.width, fmt.height)
        self.sync = rtc.AVSynchronizer(
            audio_source=self.audio_source, video_source=self.video_source, video_fps=fmt.fps,
            video_queue_size_ms=queue_ms,
        )
        self._recent: deque[tuple[int, bool]] = deque(maxlen=RECENT_FRAMES)  # (samples, speaking)
        self._room: Any = None
        self._publications: list[Any] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._pictures: asyncio.Queue[tuple[int, float, rtc.VideoFrame]] = asyncio.Queue()
        #: Counts `clear()` calls: a picture from before the latest one is never shown.
        self._clears = 0
        self._picture_task = asyncio.create_task(self._hand_over_pictures(), name="avatar-pictures")
        self.frames_pushed = 0
        self.closed = False

    @property
    def published(self) -> bool:
        return bool(self._publications)

    async def publish(self, room: Any) -> None:
        """Publish the tracks on `room`'s local participant (again, after a reconnect)."""
        await self.unpublish()
        self._room = room
        participant = room.local_participant
        video = rtc.LocalVideoTrack.create_video_track(VIDEO_TRACK_NAME, self.video_source)
        video_options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
        publications = [await participant.publish_track(video, video_options)]
        if self.publish_audio:
            audio = rtc.LocalAudioTrack.create_audio_track(AUDIO_TRACK_NAME, self.audio_source)
            audio_options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            publications.append(await participant.publish_track(audio, audio_options))
        self._publications = publications

    async def unpublish(self) -> None:
        publications, self._publications = self._publications, []
        room, self._room = self._room, None
        if room is None or not room.isconnected():
            return
        for publication in publications:
            with suppress(Exception):  # the room may be going away; nothing is left to return
                await room.local_participant.unpublish_track(publication.sid)

    async def push(self, frame: RenderedFrame) -> None:
        """Exactly this frame's audio, then its picture when that audio plays; waits while the
        audio queue is full (1x pacing)."""
        fmt = self.format
        image = np.ascontiguousarray(frame.image)
        if image.shape != (fmt.height, fmt.width, 3):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, the tracks are {fmt.width}x{fmt.height}")
        audio = np.ascontiguousarray(frame.audio, dtype=np.int16)
        picture = rtc.VideoFrame(fmt.width, fmt.height, rtc.VideoBufferType.RGB24, image.tobytes())
        plays_at = asyncio.get_running_loop().time() + self.audio_source.queued_duration
        clears = self._clears
        if len(audio):
            await self.sync.push(rtc.AudioFrame(audio.tobytes(), fmt.sample_rate, 1, len(audio)))
        if clears != self._clears:
            return  # an interrupt came while its audio waited for room: its picture would show speech after it
        self._pictures.put_nowait((clears, plays_at, picture))
        self._recent.append((len(audio), frame.speaking))
        self.frames_pushed += 1

    async def _hand_over_pictures(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            clears, plays_at, picture = await self._pictures.get()
            delay = plays_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if clears == self._clears:  # not one taken from the queue just before an interrupt emptied it
                await self.sync.push(picture)

    def clear(self) -> float:
        """Drop everything queued and not yet played; returns the seconds of speech discarded."""
        unplayed = round(self.audio_source.queued_duration * self.format.sample_rate)
        speech = 0
        for samples, speaking in reversed(self._recent):
            if unplayed <= 0:
                break
            taken = min(samples, unplayed)
            unplayed -= taken
            if speaking:
                speech += taken
        self._recent.clear()
        self._clears += 1
        self.audio_source.clear_queue()
        while not self._pictures.empty():  # their audio is gone: show what comes next at once
            self._pictures.get_nowait()
        # The few pictures waiting in the synchronizer go too (on the loop's next turn).
        task = asyncio.ensure_future(self.sync.clear_queue())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return speech / self.format.sample_rate

    async def aclose(self) -> None:
        """Unpublish and release the sources; idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.unpublish()
        finally:
            self._picture_task.cancel()
            for task in self._tasks:
                task.cancel()
            await self.sync.aclose()
            await self.audio_source.aclose()
            await self.video_source.aclose()
