"""Offline driving: cut a whole speech track into per-frame conditioning.

The node builds `Conditioning` from live streams; demos, benchmarks and tests have the
whole track at once. `frame_conditions` slices it exactly as the node does: frame k's
speech starts at k / fps and runs one frame plus the engine's look-ahead, and phonemes
are given relative to the frame's display instant.
"""

from __future__ import annotations

from typing import Iterator, Sequence

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
    """Yield one Conditioning per frame; `speech` and `listen` are float32 at 16 kHz on
    the stream's timeline (frame 0 at sample 0). A frame is 'speaking' while it overlaps
    a phoneme that is not a pause or, without phonemes, while its speech is audible."""
    frame_len = SPEECH_SAMPLE_RATE / fps
    span = int(round(frame_len + SPEECH_SAMPLE_RATE * lookahead_ms / 1000))
    speech = np.zeros(0, np.float32) if speech is None else speech
    listen = np.zeros(0, np.float32) if listen is None else listen
    behaviours = behaviours or {}
    spoken = [p for p in phonemes if p.phoneme != "_"]
    for k in range(n_frames):
        start = int(round(k * frame_len))
        t = k / fps
        chunk = _window(speech, start, span)
        if phonemes:
            speaking = any(p.start_s < t + 1 / fps and p.end_s > t for p in spoken)
            near = [
                PhonemeEvent(p.start_s - t, p.end_s - t, p.phoneme)
                for p in phonemes
                if p.end_s > t - 0.3 and p.start_s < t + 0.3
            ]
        else:
            speaking = bool(np.sqrt(np.mean(np.square(chunk[: int(frame_len)]))) > 1e-3)
            near = []
        yield Conditioning(
            speech=chunk,
            speaking=[speaking],
            listen=_window(listen, start, span),
            phonemes=near,
            behaviours=list(behaviours.get(k, ())),
            frame_index=k,
        )


def _window(track: np.ndarray, start: int, length: int) -> np.ndarray:
    out = np.zeros(length, np.float32)
    piece = track[start : start + length]
    out[: len(piece)] = piece
    return out
