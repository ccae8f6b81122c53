"""Clips -> cached training shards: what the networks see, computed once.

For every clip (a video file with an audio track, any size or frame rate) in a folder:
the video is resampled to the engine's 16 fps by timestamp; the face is found on the first
frame and the clip cropped around it the engine's way (framing.face_crop, crop_to_model to
the model's size), frame by frame as it is decoded; the audio is resampled to 16 kHz mono.
The clip is cut into segments of `4 * latent_frames - 3` video frames, each cached as:

* ``latents`` [16, T, h, w]: the Wan2.1 VAE's posterior mean of the segment (latent 0 is
  the segment's first frame, which is also the reference);
* ``reference`` [16, h, w]: that first frame encoded as an image, as the engine's prepare;
* ``audio`` [video_frames, C]: wav2vec2 features of the segment's audio, whole-segment, as
  the release computes them (`audio_features.whole_clip_features`);
* ``prompt`` [tokens, text_dim]: the prompt embeddings (a ``.txt`` beside the clip, else the
  engine's default prompt), from the weights directory's prompt store.

One shard per clip (``shards/NAME.pt``, written atomically) and ``manifest.json`` with the
counts and durations. A rerun skips clips already in the manifest (resumable). Clips that
cannot be used (no audio track, no face, too short, unreadable) are listed in the manifest
under "skipped" with the reason, and reported.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from avatar_node.engines.base import FaceBox
from avatar_node.engines.livetalk.audio_features import FRAME_SAMPLES, Wav2VecEncoder, whole_clip_features
from avatar_node.engines.livetalk.config import ModelConfig
from avatar_node.engines.livetalk.framing import CropBox, crop_to_model, face_crop
from avatar_node.engines.livetalk.prompts import DEFAULT_PROMPT, PromptNotEncoded, PromptStore
from avatar_node.engines.livetalk.text_encoder import PromptEncoder
from avatar_node.engines.livetalk.vae import WanVAE, load_vae
from avatar_node.engines.livetalk.weights import (
    PROMPTS_DIR,
    TEXT_ENCODER_FILE,
    TOKENIZER_DIR,
    VAE_FILE,
    find_wav2vec_dir,
    load_model_config,
)

FPS = 16
SAMPLE_RATE = 16_000
CLIP_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
MANIFEST = "manifest.json"
SHARDS = "shards"

#: Finds the face to crop around in an RGB frame; None when there is none.
FaceFinder = Callable[[np.ndarray], FaceBox | None]


class ClipError(ValueError):
    """A clip that cannot be used; the message says why and what to do."""


def engine_face_finder() -> FaceFinder:
    """The engine's own face detector (MediaPipe's, shipped in the package): the largest face."""
    from avatar_node.engines.portrait.detection import FaceDetector
    from avatar_node.engines.portrait.models import FaceModels

    detector = FaceDetector(FaceModels())

    def find(rgb: np.ndarray) -> FaceBox | None:
        faces = [FaceBox(d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0) for d in detector.detect(rgb) if d.size >= 24]
        return max(faces, key=lambda f: f.width * f.height) if faces else None

    return find


def centre_face(rgb: np.ndarray) -> FaceBox | None:
    """No detection: the centre square is the face (for material already framed as a head)."""
    h, w = rgb.shape[:2]
    side = min(h, w) / 2.4
    return FaceBox((w - side) / 2, (h - side) / 2, side, side)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ClipError(f"{path.name}: cannot be read as a video file ({exc})") from None


def read_audio(path: Path) -> np.ndarray:
    """The clip's audio as 16 kHz mono float32. Raises ClipError without a usable audio track."""
    with _open(path) as container:
        if not container.streams.video:
            raise ClipError(f"{path.name}: has no video track")
        if not container.streams.audio:
            raise ClipError(f"{path.name}: has no audio track; training needs the speech that drives the face")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [
            out.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for out in resampler.resample(frame)
        ]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0 or float(np.abs(audio).max()) < 1e-4:
        raise ClipError(f"{path.name}: the audio track is empty or silent")
    return audio


def frames_at_16fps(path: Path) -> Iterator[np.ndarray]:
    """RGB frames at 16 fps by timestamp (output frame k is the last source frame shown at
    k / 16 s), decoded one at a time so a long clip never sits in memory."""
    with _open(path) as container:
        start: float | None = None
        previous: np.ndarray | None = None
        k = 0
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            start = t if start is None else start
            while previous is not None and k / FPS + 1e-6 < t - start:
                yield previous
                k += 1
            previous = frame.to_ndarray(format="rgb24")
            last = t - start
        if previous is None:
            raise ClipError(f"{path.name}: the video track holds no frames")
        while k / FPS <= last + 1e-6:
            yield previous
            k += 1


def read_clip(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames at 16 fps [N, H, W, 3] uint8 and 16 kHz mono audio of a (short) clip, whole."""
    audio = read_audio(path)
    return np.stack(list(frames_at_16fps(path))), audio


@dataclass
class Encoders:
    """The frozen networks preprocessing runs, from a livetalk weights directory."""

    cfg: ModelConfig
    vae: WanVAE
    audio: Wav2VecEncoder
    prompts: PromptStore

    @classmethod
    def from_weights(cls, root: Path | str, device: str = "cpu") -> Encoders:
        root = Path(root)
        cfg = load_model_config(root)
        vae = load_vae(root / VAE_FILE, cfg.vae, device=device)

        def text_encoder() -> PromptEncoder:
            return PromptEncoder(root / TEXT_ENCODER_FILE, root / TOKENIZER_DIR, cfg.text_encoder, device=device)

        can_encode = (root / TEXT_ENCODER_FILE).is_file()
        prompts = PromptStore(root / PROMPTS_DIR, text_encoder if can_encode else None)
        return cls(cfg, vae, Wav2VecEncoder(find_wav2vec_dir(root), device=device), prompts)


def _prompt_for(path: Path) -> str:
    text = path.with_suffix(".txt")
    return text.read_text().strip() if text.is_file() else DEFAULT_PROMPT


@torch.no_grad()
def encode_clip(path: Path, enc: Encoders, latent_frames: int, find_face: FaceFinder) -> list[dict[str, torch.Tensor]]:
    """A clip's segments, ready to train on. Raises ClipError for a clip that cannot be used.

    Frames are cropped as they are decoded and encoded a segment at a time: memory is one
    segment, whatever the clip's length or size."""
    audio = read_audio(path)
    try:
        embeds = enc.prompts.get(_prompt_for(path)).float()
    except PromptNotEncoded as exc:
        raise ValueError(str(exc)) from None
    per_segment = 4 * latent_frames - 3
    size = (enc.cfg.video_height, enc.cfg.video_width)
    device = enc.vae.conv1.weight.device
    # The last usable frame still has its audio: frame k sits at sample k * FRAME_SAMPLES.
    usable = audio.size // FRAME_SAMPLES + 1
    box: CropBox | None = None
    crops: list[np.ndarray] = []
    segments: list[dict[str, torch.Tensor]] = []
    seen = 0
    for index, frame in enumerate(frames_at_16fps(path)):
        seen = index + 1
        if index >= usable:
            break
        if box is None:
            face = find_face(frame)
            if face is None:
                raise ClipError(
                    f"{path.name}: no face found on its first frame; use clips where one face is clearly "
                    "visible (or --crop centre for material already framed as a head)"
                )
            box = face_crop(frame.shape[1], frame.shape[0], face)
        crops.append(crop_to_model(frame, box, size))
        if len(crops) < per_segment:
            continue
        first = index + 1 - per_segment
        pixels = torch.from_numpy(np.stack(crops)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)[None]
        crops = []
        samples = audio[first * FRAME_SAMPLES : (first + per_segment - 1) * FRAME_SAMPLES + 1]
        segments.append(
            {
                "latents": enc.vae.encode(pixels.to(device))[0].cpu(),
                "reference": enc.vae.encode(pixels[:, :, 0].to(device))[0, :, 0].cpu(),
                "audio": whole_clip_features(samples, per_segment, enc.audio).cpu(),
                "prompt": embeds.clone(),
            }
        )
    if not segments:
        frames = min(seen, usable)
        raise ClipError(
            f"{path.name}: {frames / FPS:.2f} s of video with audio; a segment needs {per_segment} frames "
            f"({(per_segment - 1) / FPS:.2f} s)"
        )
    return segments


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _save_atomic(path: Path, value: object) -> None:
    """Write a shard (any object: torch.save) or the manifest (a dict: JSON) all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".json":
        tmp.write_text(json.dumps(value, indent=2) + "\n")
    else:
        torch.save(value, tmp)
    os.replace(tmp, path)


def find_clips(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of clips")
    clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in CLIP_SUFFIXES)
    if not clips:
        raise ValueError(f"{folder} holds no clips ({', '.join(CLIP_SUFFIXES)})")
    return clips


def preprocess(
    clips: Iterable[Path],
    out: Path,
    enc: Encoders,
    latent_frames: int,
    find_face: FaceFinder,
    log: Callable[[str], None] = print,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Encode every clip not yet done into `out`; returns the manifest (also written there).
    `dtype` is how the shards store tensors (bfloat16 halves the disk; training reads float32)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARDS).mkdir(exist_ok=True)
    manifest_path = out / MANIFEST
    manifest: dict = {"latent_frames": latent_frames, "fps": FPS, "clips": {}, "skipped": {}}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("latent_frames") != latent_frames:
            raise ValueError(
                f"{out} was made with {manifest.get('latent_frames')} latent frames per segment, not "
                f"{latent_frames}; use another output folder"
            )
    for path in clips:
        key = f"{path.stem}-{_fingerprint(path)}"
        if key in manifest["clips"] and (out / SHARDS / f"{key}.pt").is_file():
            continue
        try:
            segments = encode_clip(path, enc, latent_frames, find_face)
        except ClipError as exc:
            manifest["skipped"][path.name] = str(exc)
            log(f"skipped {exc}")
            continue
        stored = [{name: t.to(dtype) for name, t in seg.items()} for seg in segments]
        _save_atomic(out / SHARDS / f"{key}.pt", stored)
        manifest["skipped"].pop(path.name, None)
        manifest["clips"][key] = {
            "source": path.name,
            "segments": len(segments),
            "seconds": len(segments) * (4 * latent_frames - 4) / FPS,
        }
        manifest["segments"] = sum(c["segments"] for c in manifest["clips"].values())
        manifest["seconds"] = round(sum(c["seconds"] for c in manifest["clips"].values()), 3)
        _save_atomic(manifest_path, manifest)
        log(f"{path.name}: {len(segments)} segment(s)")
    manifest.setdefault("segments", 0)
    manifest.setdefault("seconds", 0.0)
    _save_atomic(manifest_path, manifest)
    return manifest
