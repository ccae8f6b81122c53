"""Offline driving: cut a whole speech track into per-frame conditioning.

The node builds `Conditioning` from live streams; demos, benchmarks and tests have the
whole track at once. `frame_conditions` cuts it with the node's own cutter: frame k's
speech starts at k / fps and runs one frame plus the engine's look-ahead, and phonemes
are given relative to the frame's display instant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, Conditioning, PhonemeEvent


def resample_to_speech_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono int16 or float audio at `rate` -> float32 at SPEECH_SAMPLE_RATE (linear)."""
    audio = np.asarray(samples)
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    audio = audio.astype(np.float32)
    if rate == SPEECH_SAMPLE_RATE:
        return audio
    n_out = int(round(len(audio) * SPEECH_SAMPLE_RATE / rate))
    positions = np.arange(n_out) * (rate / SPEECH_SAMPLE_RATE)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def frame_conditions(
    n_frames: int,
    fps: float,
    lookahead_ms: int,
    speech: np.ndarray | None = None,
    phonemes: Sequence[PhonemeEvent] = (),
    listen: np.ndarray | None = None,
    behaviours: dict[int, Sequence[str]] | None = None,
) -> Iterator[Conditioning]:
    """Yield one Conditioning per frame, cut exactly as the node cuts a stream (the node's
    own queue and cutter: `avatar_node.pipeline.conditioning`). `speech` and `listen` are
    float32 at 16 kHz on the stream's timeline (frame 0 at sample 0); the speech is one
    turn from frame 0, so its frames are 'speaking' and the frames after it idle."""
    from avatar_node.pipeline.conditioning import offline_conditions

    yield from offline_conditions(n_frames, fps, lookahead_ms, speech, phonemes, listen, behaviours)
