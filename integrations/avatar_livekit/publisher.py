"""Publishing rendered frames into a room: one audio and one video track, on one playout clock.

Every frame goes in as exactly its own 1/fps of audio and its picture. The audio source
plays what it holds in real time and fills any gap with silence; this module keeps its own
account of when the queued audio will have played (`_audio_ends_at`), so each picture is
captured when its own audio starts to play. The SDK's estimate of its queue goes wrong once
the queue runs dry, and its synchronizer spaces pictures at 1/fps after a burst, which left
the face frames behind the voice for good after the event loop stalled: here a picture that
is overdue when a newer one is due too is skipped, so the face catches up at once.

The audio queued ahead of its playout (the cushion) rides out the loop's lateness. It is
steered towards `lead` where nobody hears it: idle frames and the first frame of speech top
it up with silence, and idle frames are left out while it is too deep (after a stall's backlog
came in a burst). `lead` is nothing at first (no added latency), grown past the lateness that
made the voice run dry when the loop was woken too late (so a loaded process stops breaking up the voice after its first
stall), and shrunk back slowly once the loop keeps time. An interrupt empties the cushion;
the frames after it refill it.

The tracks are published before the first frame is captured and only once a real frame is
ready, so a subscriber never sees a blank or green picture, and idle video flows from the start.

An interrupt (`clear()`) empties the audio queue and drops every picture still waiting, and
says how much speech that discarded, so the playback position reported to the agent is what
people heard.
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
#: The lead's floor: none, so a loop that keeps time adds no latency; it grows when the loop
#: proves late (an interrupt empties the queue either way, so a lead costs no barge-in time).
MIN_LEAD_MS = 0
#: The most the lead grows to on a loop that keeps waking late.
MAX_LEAD_MS = 500
#: How much more than the latest stall the lead covers.
LEAD_MARGIN = 1.25
#: The audio source plays in 10 ms chunks: a lead finer than one does not help.
SOURCE_CHUNK_S = 0.01
#: How fast the lead shrinks back while the loop keeps time (ms of lead per second played).
LEAD_DECAY_MS_PER_S = 5.0
#: Frames remembered to account for what an interrupt discards (well over MAX_LEAD_MS).
RECENT_FRAMES = 40


class TrackPublisher:
    def __init__(self, fmt: VideoFormat, *, publish_audio: bool = True, min_lead_ms: int = MIN_LEAD_MS) -> None:
        self.format = fmt
        self.publish_audio = publish_audio
        # Room for the longest lead and a stall's burst: the renderer paces, not a full queue.
        capacity_ms = 2 * MAX_LEAD_MS
        self.audio_source = rtc.AudioSource(fmt.sample_rate, 1, queue_size_ms=capacity_ms)
        self.video_source = rtc.VideoSource(fmt.width, fmt.height)
        self._min_lead = min_lead_ms / 1000
        #: Seconds of audio kept queued ahead of its playout (grows with the loop's lateness).
        self.lead = self._min_lead
        #: Loop time when the audio queued so far will have played (0: nothing queued yet).
        self._audio_ends_at = 0.0
        self._last_speaking = False  # the latest frame pushed spoke
        self._recent: deque[tuple[int, bool]] = deque(maxlen=RECENT_FRAMES)  # (samples, speaking)
        self._room: Any = None
        self._publications: list[Any] = []
        self._pictures: deque[tuple[int, float, rtc.VideoFrame]] = deque()  # (clears, shows_at, picture)
        self._picture_added = asyncio.Event()
        #: Counts `clear()` calls: a picture from before the latest one is never shown.
        self._clears = 0
        self._picture_task = asyncio.create_task(self._show_pictures(), name="avatar-pictures")
        self.frames_pushed = 0
        self.pictures_skipped = 0  # overdue pictures skipped to catch up with the voice
        self.voice_gaps = 0  # times the voice ran dry mid-speech (the loop or the renderer was late)
        self.idle_frames_left_out = 0  # idle frames not published, to bring the cushion back to `lead`
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
        """Exactly this frame's audio, then its picture when that audio plays.

        Frames come at 1x from the renderer; the audio queued ahead of its playout (the cushion)
        is steered towards `lead` only where nobody hears it: an idle frame tops it up with
        silence, or is left out when the cushion is a frame too deep. Waits only while the
        audio source is full."""
        fmt = self.format
        image = np.ascontiguousarray(frame.image)
        if image.shape != (fmt.height, fmt.width, 3):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, the tracks are {fmt.width}x{fmt.height}")
        audio = np.ascontiguousarray(frame.audio, dtype=np.int16)
        duration = len(audio) / fmt.sample_rate
        now = asyncio.get_running_loop().time()
        ahead = self._audio_ends_at - now
        if self._audio_ends_at and ahead < 0 and frame.speaking:
            # The voice ran dry mid-speech: the loop (or the renderer) was `lead - ahead` late
            # at least. Cover more than that from now on, so a stall like it does not break it again.
            self.voice_gaps += 1
            self.lead = min(MAX_LEAD_MS / 1000, LEAD_MARGIN * (self.lead - ahead) + SOURCE_CHUNK_S)
            log.debug("avatar voice ran dry for %.0f ms; keeping %.0f ms ahead", -ahead * 1000, self.lead * 1000)
        elif self.lead > self._min_lead:
            self.lead = max(self._min_lead, self.lead - LEAD_DECAY_MS_PER_S / 1000 * duration)
        pad = 0
        if not frame.speaking or not self._last_speaking:  # silence before it: a change nobody hears
            if not frame.speaking and ahead > self.lead + duration:
                self.idle_frames_left_out += 1
                return  # the cushion is deeper than needed: catch up on a frame nobody hears
            pad = max(0, round((self.lead - max(ahead, 0.0)) * fmt.sample_rate))
        starts_at = max(now, self._audio_ends_at)  # where this frame's silence or audio begins
        plays_at = starts_at + pad / fmt.sample_rate
        self._audio_ends_at = plays_at + duration
        self._last_speaking = frame.speaking
        # An idle picture shows through its padding; a speaking one when its voice starts.
        shows_at = plays_at if frame.speaking else starts_at
        clears = self._clears
        if pad:
            audio = np.concatenate([np.zeros(pad, np.int16), audio])
            self._recent.append((pad, False))
        if len(audio):
            await self.audio_source.capture_frame(rtc.AudioFrame(audio.tobytes(), fmt.sample_rate, 1, len(audio)))
        if clears != self._clears:
            return  # an interrupt came while its audio waited for room: its picture would show speech after it
        picture = rtc.VideoFrame(fmt.width, fmt.height, rtc.VideoBufferType.RGB24, image.tobytes())
        self._pictures.append((clears, shows_at, picture))
        self._picture_added.set()
        self._recent.append((len(audio) - pad, frame.speaking))
        self.frames_pushed += 1

    async def _show_pictures(self) -> None:
        """Capture each picture when its audio starts to play; skip one that is overdue when the
        next is due too (the loop was late), so the face is back on the voice at once."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._pictures:
                self._picture_added.clear()
                await self._picture_added.wait()
            clears, plays_at, picture = self._pictures.popleft()
            delay = plays_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if clears != self._clears:
                continue  # taken from the queue just before an interrupt emptied it
            if self._pictures and self._pictures[0][1] <= loop.time():
                self.pictures_skipped += 1
                continue
            self.video_source.capture_frame(picture)

    def show_now(self, image: np.ndarray) -> None:
        """Capture `image` at once, outside the frames' timing (the face at rest after an
        interrupt, rather than the last speaking picture until the renderer's next frame)."""
        fmt = self.format
        if image.shape == (fmt.height, fmt.width, 3):
            data = np.ascontiguousarray(image).tobytes()
            self.video_source.capture_frame(rtc.VideoFrame(fmt.width, fmt.height, rtc.VideoBufferType.RGB24, data))

    def clear(self) -> float:
        """Drop everything queued and not yet played; returns the seconds of speech discarded."""
        now = asyncio.get_running_loop().time()
        unplayed = max(0, round((self._audio_ends_at - now) * self.format.sample_rate))
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
        self._audio_ends_at = now
        self._last_speaking = False
        self._pictures.clear()  # their audio is gone: show what comes next at once
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
            await asyncio.gather(self._picture_task, return_exceptions=True)
            await self.audio_source.aclose()
            await self.video_source.aclose()
