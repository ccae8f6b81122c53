"""One feed frame as Pipecat frames: its picture, then exactly its audio.

The picture goes first with `sync_with_audio`, so the output transport shows it once the audio
before it has been written, that is when its own audio starts: lips and voice leave together.
Speech goes out as `TTSAudioRawFrame` (the transport counts the bot as speaking), idle frames'
silence as plain `OutputAudioRawFrame` (it does not), so the audio clock never stops. Pts are
Pipecat's nanoseconds, on the feed's timeline.
"""

from __future__ import annotations

import numpy as np
from avatar_client.feed_items import FeedFormat, FeedFrame
from pipecat.frames.frames import OutputAudioRawFrame, OutputImageRawFrame, TTSAudioRawFrame


def pts_ns(fmt: FeedFormat, pts: int) -> int:
    """A feed pts (clock ticks) in Pipecat's nanoseconds."""
    return pts * 1_000_000_000 // fmt.clock_rate


def picture_frame(fmt: FeedFormat, frame: FeedFrame, picture: np.ndarray) -> OutputImageRawFrame:
    image = OutputImageRawFrame(image=np.ascontiguousarray(picture).tobytes(), size=(fmt.width, fmt.height),
                                format="RGB")
    image.sync_with_audio = True
    image.pts = pts_ns(fmt, frame.pts)
    return image


def audio_frame(fmt: FeedFormat, frame: FeedFrame, speech: bool, context_id: str | None) -> OutputAudioRawFrame:
    """The frame's audio: as TTS audio when it is speech, else as silence of the same length."""
    samples = frame.audio if speech else np.zeros(len(frame.audio), np.int16)
    pcm = np.ascontiguousarray(samples, dtype=np.int16).tobytes()
    audio: OutputAudioRawFrame
    if speech:
        audio = TTSAudioRawFrame(audio=pcm, sample_rate=fmt.clock_rate, num_channels=1, context_id=context_id)
    else:
        audio = OutputAudioRawFrame(audio=pcm, sample_rate=fmt.clock_rate, num_channels=1)
    audio.pts = pts_ns(fmt, frame.pts)
    return audio
