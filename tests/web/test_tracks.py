"""The two WebRTC tracks carry each frame's picture and exactly its audio on the frame's pts."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np

from avatar_node.pipeline import AVFrame
from avatar_node.web.tracks import AvatarAudioTrack, AvatarVideoTrack, SentClock

RATE, FPS = 48000, 25
TICKS = RATE // FPS


def frame(index: int, first_pts: int = 0) -> AVFrame:
    pts = first_pts + index * TICKS
    audio = (np.arange(TICKS, dtype=np.int64) + pts).astype(np.int16)  # each sample names its own position
    image = np.full((36, 64, 3), index % 256, np.uint8)
    return AVFrame(index=index, pts=pts, duration=TICKS, audio=audio, sample_rate=RATE, speaking=True,
                   image=image, encoded=None)


async def test_audio_and_video_share_the_frame_pts_and_a_dropped_frame_leaves_silence_in_place():
    sent = SentClock()
    video, audio = AvatarVideoTrack(RATE, sent), AvatarAudioTrack(RATE, sent)
    before = frame(0)
    video.put(before)  # before the peer connects nothing is kept: it would only add latency
    audio.put(before)
    pulls = [asyncio.ensure_future(video.recv()), asyncio.ensure_future(audio.recv())]
    await asyncio.sleep(0)  # both senders now ask for frames
    start = 7 * TICKS  # the session had been running before the peer connected
    frames = [frame(i, start) for i in (0, 1, 3, 4)]  # frame 2 was dropped by the pipeline (slow reader)
    pictures = []
    for f in frames:  # as the pump does: each frame to both tracks at once
        video.put(f)
        audio.put(f)
        pictures.append(await (pulls[0] if not pictures else video.recv()))
    pieces = [await pulls[1]]
    while True:  # everything the audio track has for these frames
        try:
            pieces.append(await asyncio.wait_for(audio.recv(), 0.2))
        except asyncio.TimeoutError:
            break

    assert [p.pts for p in pictures] == [f.pts for f in frames]
    assert all(p.time_base == fractions.Fraction(1, RATE) for p in pictures + pieces)
    # Audio: contiguous from the first frame's pts, every sample where its pts says.
    assert pieces[0].pts == start
    for a, b in zip(pieces, pieces[1:]):
        assert b.pts == a.pts + a.samples
    samples = np.concatenate([p.to_ndarray().reshape(-1) for p in pieces])
    assert samples.size == frames[-1].pts + TICKS - start, "the audio does not span the frames' pts"
    for f in frames:
        at = f.pts - start
        assert np.array_equal(samples[at:at + TICKS], f.audio), f"audio of frame {f.index} is not at its pts"
    hole = samples[2 * TICKS:3 * TICKS]
    assert not hole.any(), "the dropped frame's time must be silence, not the next frame's audio"
    assert audio.silence_filled_samples == TICKS
    # One Opus packet per encode call: the sender gives every packet of a call the same timestamp.
    assert max(p.samples for p in pieces) <= RATE // 50
    video.stop()
    audio.stop()


async def test_the_video_queue_drops_the_oldest_picture_when_the_encoder_falls_behind():
    sent = SentClock()
    video = AvatarVideoTrack(RATE, sent)
    pull = asyncio.ensure_future(video.recv())
    await asyncio.sleep(0)
    video.put(frame(0))
    assert (await pull).pts == 0
    for i in range(1, 6):  # nobody reads for five frames
        video.put(frame(i))
    assert video.dropped == 3
    assert [(await video.recv()).pts for _ in range(2)] == [4 * TICKS, 5 * TICKS]
    video.stop()
