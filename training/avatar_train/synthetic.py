"""A synthetic talking-head dataset: something to learn, made in seconds, no people in it.

Each clip is a textured face-like blob on a patterned background whose mouth opens with the
loudness of its synthetic speech (a voiced buzz under a syllable envelope), written as a
video file with an audio track, as real clips arrive. `mouth_opening` reads the mouth back
from pixels, so a test can measure how well generated video follows the audio.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000
#: The mouth's box, as fractions of the frame (rows, columns).
MOUTH_ROWS = (0.58, 0.78)
MOUTH_COLS = (0.38, 0.62)


def speech_envelope(seconds: float, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Syllables of 120-300 ms with short pauses: loudness in [0, 1] per sample."""
    n = int(round(seconds * rate))
    env = np.zeros(n, dtype=np.float32)
    at = int(rng.integers(0, rate // 10))
    while at < n:
        length = int(rng.uniform(0.12, 0.3) * rate)
        level = rng.uniform(0.4, 1.0)
        span = min(length, n - at)
        env[at : at + span] = level * np.sin(np.linspace(0.0, np.pi, length))[:span]
        at += length + int(rng.uniform(0.03, 0.25) * rate)
    return env


def speech(envelope: np.ndarray, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced buzz (harmonics of a wandering pitch) under the envelope, float32 in [-1, 1]."""
    t = np.arange(envelope.size) / rate
    pitch = 120.0 + 30.0 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    buzz = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (0.5 * envelope * buzz / 2.3).astype(np.float32)


def face_frame(size: int, opening: float, rng_texture: np.ndarray) -> np.ndarray:
    """One RGB uint8 frame: background texture, skin ellipse, eyes, a mouth `opening` in [0, 1] open."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    frame = rng_texture.copy()
    face = ((xx - 0.5) / 0.32) ** 2 + ((yy - 0.5) / 0.4) ** 2 < 1.0
    frame[face] = (205, 160, 130)
    for ex in (0.38, 0.62):
        eye = ((xx - ex) / 0.05) ** 2 + ((yy - 0.4) / 0.03) ** 2 < 1.0
        frame[eye] = (40, 30, 30)
    half_height = 0.01 + 0.08 * float(np.clip(opening, 0.0, 1.0))
    mouth = ((xx - 0.5) / 0.1) ** 2 + ((yy - 0.68) / half_height) ** 2 < 1.0
    frame[mouth] = (90, 20, 30)
    return frame


def mouth_opening(frames: np.ndarray) -> np.ndarray:
    """How dark the mouth box is in each frame [T, H, W, 3] uint8 -> [T] (larger = more open)."""
    t, h, w, _ = frames.shape
    box = frames[:, int(MOUTH_ROWS[0] * h) : int(MOUTH_ROWS[1] * h), int(MOUTH_COLS[0] * w) : int(MOUTH_COLS[1] * w)]
    return 1.0 - box.astype(np.float32).mean(axis=(1, 2, 3)) / 255.0


def write_clip(
    path: Path,
    seconds: float,
    *,
    seed: int,
    size: int = 64,
    fps: int = 25,
    audio: bool = True,
    face: bool = True,
) -> Path:
    """Write one synthetic clip (H.264 + AAC in MP4). `audio=False` / `face=False` make the
    clips that preprocessing must refuse."""
    rng = np.random.default_rng(seed)
    env = speech_envelope(seconds, rng)
    texture = (rng.integers(60, 200, size=(size // 8, size // 8, 3))).astype(np.uint8)
    background = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))
    frames = int(round(seconds * fps))
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "12", "preset": "ultrafast"}
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=SAMPLE_RATE)
            sound.layout = "mono"
        for k in range(frames):
            centre = int(min(env.size - 1, k * SAMPLE_RATE / fps))
            image = face_frame(size, env[centre], background) if face else background
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = speech(env, rng)
            chunk = 1024
            for start in range(0, samples.size, chunk):
                part = samples[None, start : start + chunk]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="flt", layout="mono")
                frame.sample_rate = SAMPLE_RATE
                frame.pts = start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def write_dataset(folder: Path | str, clips: int, seconds: float, *, seed: int = 0, size: int = 64) -> list[Path]:
    """`clips` synthetic clips in `folder`, each with a prompt file beside it."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(clips):
        path = write_clip(root / f"talk-{i:03d}.mp4", seconds, seed=seed + i, size=size)
        path.with_suffix(".txt").write_text("a person talking to the camera\n")
        paths.append(path)
    return paths
