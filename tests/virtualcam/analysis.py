"""Measuring what the devices got: flashes and beeps, mouth openings and speech energy, on the
one monotonic clock every process on the machine shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar_client.virtualcam.pixels import to_rgb

RATE = 48_000


def flash_times(times: np.ndarray, lumas: np.ndarray, threshold: float = 200.0) -> np.ndarray:
    """When each white flash first reached the camera."""
    bright = lumas > threshold
    starts = np.flatnonzero(bright & ~np.concatenate([[False], bright[:-1]]))
    return times[starts]


def beep_onsets(recording: np.ndarray, t0: float, threshold: int = 8000, gap_s: float = 0.3) -> np.ndarray:
    """When each beep started to be heard from the microphone."""
    loud = np.flatnonzero(np.abs(recording.astype(np.int32)) > threshold)
    if loud.size == 0:
        return np.zeros(0)
    starts = loud[np.concatenate([[True], np.diff(loud) > gap_s * RATE])]
    # The tone's first sample above threshold can be a quarter period in: step back to its start.
    return t0 + starts / RATE


def paired_offsets(video: np.ndarray, audio: np.ndarray, within_s: float = 0.4) -> np.ndarray:
    """For each flash, the nearest beep's time minus the flash's (audio later is positive)."""
    out = []
    for t in video:
        if audio.size:
            nearest = audio[np.argmin(np.abs(audio - t))]
            if abs(nearest - t) <= within_s:
                out.append(nearest - t)
    return np.array(out)


def read_frames(path: Path, width: int, height: int, fmt: str = "I420") -> list[np.ndarray]:
    size = {"I420": width * height * 3 // 2, "NV12": width * height * 3 // 2, "YUYV": width * height * 2,
            "UYVY": width * height * 2, "RGB": width * height * 3}[fmt]
    data = np.fromfile(path, np.uint8)
    return [to_rgb(data[i : i + size], fmt, width, height) for i in range(0, len(data) - size + 1, size)]


def energy_at(recording: np.ndarray, t0: float, times: np.ndarray, span_s: float) -> np.ndarray:
    """RMS of what was heard during [t, t + span) for each t."""
    x = recording.astype(np.float64) / 32768
    out = np.zeros(len(times))
    for i, t in enumerate(times):
        a = int(round((t - t0) * RATE))
        b = a + int(span_s * RATE)
        if a >= 0 and b <= len(x):
            out[i] = np.sqrt(np.mean(x[a:b] ** 2))
    return out


def best_lag(video: np.ndarray, audio: np.ndarray, max_lag: int = 8) -> float:
    """The lag (in samples of the series, sub-sample by parabolic fit) by which `audio` follows
    `video`: audio[i + lag] matches video[i]."""
    v = (video - video.mean()) / (video.std() + 1e-12)
    a = (audio - audio.mean()) / (audio.std() + 1e-12)
    lags = np.arange(-max_lag, max_lag + 1)
    scores = []
    for lag in lags:
        if lag >= 0:
            scores.append(float(np.mean(v[: len(v) - lag] * a[lag:])))
        else:
            scores.append(float(np.mean(v[-lag:] * a[: len(a) + lag])))
    s = np.array(scores)
    i = int(np.argmax(s))
    if 0 < i < len(s) - 1:
        denominator = s[i - 1] - 2 * s[i] + s[i + 1]
        shift = 0.5 * (s[i - 1] - s[i + 1]) / denominator if denominator else 0.0
    else:
        shift = 0.0
    return float(lags[i] + shift)


def match_segments(
    spoken: np.ndarray, recording: np.ndarray, segment_s: float = 0.2, search_s: float = 0.15
) -> tuple[float, np.ndarray, int]:
    """How much of `spoken` the recording holds unaltered: each voiced segment is looked for near
    where the previous one was found. Returns (fraction of voiced segments found with a
    correlation peak above 0.95, their offsets in samples, the anchor position)."""
    from .conftest import locate, rms_db

    n = int(segment_s * RATE)
    search = int(search_s * RATE)
    anchor, _ = locate(spoken, recording)
    expected_shift = anchor
    found, offsets, voiced = 0, [], 0
    for start in range(0, len(spoken) - n + 1, n):
        piece = spoken[start : start + n]
        if rms_db(piece) < -45:
            continue
        voiced += 1
        lo = max(0, start + expected_shift - search)
        hi = min(len(recording), start + expected_shift + n + search)
        if hi - lo < n:
            continue
        lag, peak = locate(piece, recording[lo:hi])
        if peak > 0.95:
            found += 1
            expected_shift = lo + lag - start
            offsets.append(expected_shift)
    return found / max(voiced, 1), np.array(offsets), anchor
