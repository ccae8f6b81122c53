"""Delivering frames in order: encode, keep the one clock, account turns, apply the slow-consumer policy.

Frames are encoded here, at delivery and in index order, so the encoder only ever
sees frames the consumer gets: a frame discarded before delivery (barge-in, a late
frame replaced by a repeat) never becomes a reference. A live stream whose consumer
does not keep up drops whole frames (picture and audio) and makes the next frame
delivered a keyframe; a render stream never gets here without room.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import numpy as np

from avatar_node.media.clock import MediaClock
from avatar_node.media.encoder import EncodedFrame, H264Encoder

from .board import CutFrame
from .items import AVFrame, Notice, NoticeCode, TurnEvent, TurnKind
from .outbox import Outbox
from .speech import SpeechTurn
from .stats import StreamCounters


def turn_event(
    turn: SpeechTurn, kind: TurnKind, clock: MediaClock, pts: int = 0, interrupted: bool = False
) -> TurnEvent:
    rate = clock.clock_rate
    if kind is TurnKind.FINISHED:
        pts = (turn.start_pts or 0) + turn.played
    return TurnEvent(
        turn_id=turn.turn_id,
        kind=kind,
        pts=pts,
        interrupted=interrupted,
        played_ms=turn.played * 1000 // rate,
        duration_ms=turn.duration_samples * 1000 // rate if turn.closed else 0,
    )


def _timed_encode(encoder: H264Encoder, image: np.ndarray) -> tuple[EncodedFrame, float]:
    cpu = time.thread_time()
    encoded = encoder.encode(image)
    return encoded, time.thread_time() - cpu


class Delivery:
    def __init__(
        self,
        clock: MediaClock,
        live: bool,
        outbox: Outbox,
        counters: StreamCounters,
        encoder: H264Encoder | None,
        keep_images: bool,
        run_encode: Callable[..., Awaitable[tuple[EncodedFrame, float]]],
    ) -> None:
        self.clock = clock
        self.live = live
        self.outbox = outbox
        self.counters = counters
        self.encoder = encoder
        self.keep_images = keep_images
        self._run_encode = run_encode
        self.last_image: np.ndarray | None = None
        #: The frame committed and on its way (being encoded or waiting for its due time).
        self.delivering: CutFrame | None = None
        self._told_slow = False

    def turn(self, turn: SpeechTurn, kind: TurnKind, pts: int = 0, interrupted: bool = False) -> None:
        self.outbox.put(turn_event(turn, kind, self.clock, pts, interrupted))

    def force_keyframe(self) -> None:
        if self.encoder is not None:
            self.encoder.force_keyframe()

    async def deliver(self, frame: CutFrame, wait_until_due: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Hand one frame (picture and audio) to the consumer; False if it was dropped."""
        self.delivering = frame
        try:
            return await self._deliver(frame, wait_until_due)
        finally:
            self.delivering = None

    async def _deliver(self, frame: CutFrame, wait_until_due: Callable[[], Awaitable[None]] | None) -> bool:
        index, speech = frame.index, frame.speech
        pts = self.clock.pts(index)
        turn = speech.turn
        if turn is not None and speech.speaking and turn.start_pts is None:
            turn.start_pts = pts
            self.turn(turn, TurnKind.STARTED, pts=pts)
        delivered = False
        if self.live and not self.outbox.media_room():
            self.counters.frames_dropped += 1
            self.force_keyframe()
            if not self._told_slow:
                self._told_slow = True
                self.outbox.put(Notice(NoticeCode.SLOW_READER, "frames are being dropped: this client reads "
                                       "the stream slower than real time"))
        else:
            repeated = frame.image is None
            image = self.last_image if repeated else frame.image
            if image is None:
                raise RuntimeError("a repeat was asked for before any frame was rendered")
            encoded: EncodedFrame | None = None
            if self.encoder is not None:
                encoded, cpu_s = await self._run_encode(_timed_encode, self.encoder, image)
                self.counters.record_encode(cpu_s)
            if wait_until_due is not None:
                await wait_until_due()
            self.outbox.put(
                AVFrame(
                    index=index,
                    pts=pts,
                    duration=self.clock.frame_ticks(index),
                    audio=speech.audio,
                    sample_rate=self.clock.clock_rate,
                    speaking=speech.speaking,
                    image=image if self.keep_images else None,
                    encoded=encoded.data if encoded else None,
                    keyframe=encoded.keyframe if encoded else True,
                    repeated=repeated,
                )
            )
            self.counters.frames_sent += 1
            self.last_image = image
            delivered = True
        if turn is not None:
            if delivered:
                turn.played += speech.speech_samples
            if turn.interrupted:  # barge-in came while this frame was on its way
                turn.interrupted = False
                self.turn(turn, TurnKind.FINISHED, interrupted=True)
            elif speech.ends_turn:
                self.turn(turn, TurnKind.FINISHED)
        return delivered
