"""The one way speech, listening and controls become an engine step's `Conditioning`.

The node cuts live input with it, and tools, tests and benchmarks that hold a whole
track cut it with `offline_conditions`, which runs the very same queue and cutter, so
an engine test sees exactly what the node would send.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, Conditioning, PhonemeEvent
from avatar_node.media.audio import to_int16
from avatar_node.media.clock import MediaClock

from .listen import ListenTrack
from .speech import SpeechQueue, StepSpeech


class ConditioningCutter:
    def __init__(self, clock: MediaClock, speech: SpeechQueue, listen: ListenTrack) -> None:
        self.clock = clock
        self.speech = speech
        self.listen = listen

    def cut(
        self, first_index: int, count: int, may_start: bool, behaviours: Sequence[str] = (), prompt: str = ""
    ) -> tuple[Conditioning, StepSpeech]:
        """Take the speech of frames [first_index, first_index+count) and build their conditioning."""
        step = self.speech.take_step(first_index, count, may_start)
        span = self.clock.samples_at(first_index + count, SPEECH_SAMPLE_RATE) - self.clock.samples_at(
            first_index, SPEECH_SAMPLE_RATE
        )
        cond = Conditioning(
            speech=step.engine_audio,
            speaking=[f.speaking for f in step.frames],
            listen=self.listen.take(span, len(step.engine_audio)),
            phonemes=step.phonemes,
            behaviours=tuple(behaviours),
            prompt=prompt,
            frame_index=first_index,
            turn_audio=step.turn_audio,
        )
        return cond, step


def offline_conditions(
    n_frames: int,
    fps: float,
    lookahead_ms: int,
    speech: np.ndarray | None = None,
    phonemes: Sequence[PhonemeEvent] = (),
    listen: np.ndarray | None = None,
    behaviours: Mapping[int, Sequence[str]] | None = None,
    frames_per_step: int = 1,
) -> Iterator[Conditioning]:
    """Conditioning for `n_frames` frames of a whole track, as the node would cut it.

    `speech` and `listen` are float32 mono at SPEECH_SAMPLE_RATE on the stream's
    timeline (frame 0 at sample 0). The speech is one turn starting at frame 0 (with
    `phonemes` relative to its start); frames after it are idle.
    """
    clock = MediaClock.create(fps, SPEECH_SAMPLE_RATE)
    queue = SpeechQueue(clock, lookahead_ms)
    if speech is not None and len(speech):
        engine = np.asarray(speech, dtype=np.float32)
        queue.queue_clip("speech", SPEECH_SAMPLE_RATE, to_int16(engine), engine, phonemes)
    track = ListenTrack(live=False, backlog_s=len(listen) / SPEECH_SAMPLE_RATE + 1 if listen is not None else None)
    if listen is not None and len(listen):
        track.push(to_int16(np.asarray(listen, dtype=np.float32)), SPEECH_SAMPLE_RATE)
    cutter = ConditioningCutter(clock, queue, track)
    behaviours = behaviours or {}
    for first in range(0, n_frames, frames_per_step):
        count = min(frames_per_step, n_frames - first)
        wanted = [name for k in range(first, first + count) for name in behaviours.get(k, ())]
        cond, _ = cutter.cut(first, count, may_start=True, behaviours=wanted)
        yield cond
