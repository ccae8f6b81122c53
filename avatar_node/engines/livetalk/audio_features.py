"""wav2vec2 speech features per video frame: for a whole clip as the release computes them,
and in a stream with a bounded look-ahead.

The release's recipe (GAIR-NLP/LiveTalk, after OmniAvatar), restated:

1. the clip is normalised once, (x - mean) / sqrt(var + 1e-7), in float32;
2. the CNN feature encoder runs over it (one vector per 320 samples, 400-sample field);
3. those vectors are resampled to one per video frame by linear interpolation with
   ``align_corners=True`` *before* the feature projection, so the transformer runs at the
   video rate (16 tokens per second);
4. the features are the last hidden state followed by every hidden state (the projected
   input after the positional convolution, then each layer): 14 x 768 = 10752 dims for
   wav2vec2-base. (The first and last 768-dim blocks are therefore the same.)

A clip of N video frames is N - 1 frame periods of audio ((N - 1) / 16 s): frame k sits at
k / 16 s. `audio.group_block_features` then repeats frame 0 three times, as the release
does, to give each latent frame its 4 vectors.

The streaming mode (`StreamingAudioFeatures`) runs the same network over a sliding window:
up to `context_frames` frames of past speech, the step's frames, and `lookahead_frames`
frames of future speech, normalised with running statistics of the session's speech. It
needs `lookahead_frames` frame periods of audio past the end of a step, which is the
engine's declared look-ahead. `streaming_difference_table` measures how far its features
are from the whole-clip ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avatar_node.engines.base import SPEECH_SAMPLE_RATE

#: Audio samples per video frame (16 kHz audio, 16 fps video).
FRAME_SAMPLES = SPEECH_SAMPLE_RATE // 16
#: The normaliser's epsilon (Wav2Vec2FeatureExtractor's).
NORM_EPS = 1e-7


def normalise(waveform: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole clip, float32 (as the feature extractor does)."""
    x = np.asarray(waveform, dtype=np.float32)
    return ((x - x.mean()) / np.sqrt(x.var() + NORM_EPS)).astype(np.float32)


class Wav2VecEncoder:
    """wav2vec2 from a local Hugging Face folder, run the release's way (see module notes)."""

    def __init__(
        self, folder: Path | str, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        from transformers import Wav2Vec2Model
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a CTC checkpoint's unused lm_head is expected
        try:
            model = Wav2Vec2Model.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
        finally:
            hf_logging.set_verbosity(verbosity)
        if getattr(model, "adapter", None) is not None:
            raise ValueError(f"{folder}: a wav2vec2 with an adapter is not what the release uses")
        self.model: Any = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype
        cfg = model.config
        self.feature_dim = cfg.hidden_size * (cfg.num_hidden_layers + 2)

    @classmethod
    def from_model(cls, model: Any) -> Wav2VecEncoder:
        """Wrap an already built `transformers.Wav2Vec2Model` (tests, benchmarks)."""
        self = cls.__new__(cls)
        self.model = model.eval().requires_grad_(False)
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        cfg = model.config
        self.feature_dim = cfg.hidden_size * (cfg.num_hidden_layers + 2)
        return self

    @torch.no_grad()
    def encode(self, normalised: np.ndarray | torch.Tensor, frames: int) -> torch.Tensor:
        """Normalised audio [samples] -> features [frames, feature_dim] (float32)."""
        x = torch.as_tensor(normalised, dtype=torch.float32).to(self.device, self.dtype)
        if x.ndim != 1:
            raise ValueError(f"expected mono audio [samples], got {tuple(x.shape)}")
        if x.shape[0] < 400:
            x = F.pad(x, (0, 400 - x.shape[0]))  # the CNN needs one 25 ms field
        model = self.model
        cnn = model.feature_extractor(x[None])  # [1, 512, L]
        per_frame = F.interpolate(cnn, size=frames, mode="linear", align_corners=True).transpose(1, 2)
        hidden, _ = model.feature_projection(per_frame)
        out = model.encoder(hidden, output_hidden_states=True, return_dict=True)
        if out.hidden_states is None:  # transformers 5.x changed this path; pin <5
            raise RuntimeError("wav2vec2 returned no hidden states; install transformers>=4.49,<5")
        return torch.cat([out.last_hidden_state, *out.hidden_states], dim=-1)[0].float()


def whole_clip_features(waveform: np.ndarray, num_frames: int, encoder: Wav2VecEncoder) -> torch.Tensor:
    """Per-video-frame features of a whole clip, exactly as the release computes them.

    waveform: mono float at 16 kHz (the release first trims it to (num_frames - 1) / 16 s).
    Returns [num_frames, feature_dim] float32, frame k at k / 16 s; without the release's
    3-fold repeat of frame 0 (see `audio.group_block_features`).
    """
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    return encoder.encode(normalise(waveform), num_frames)


class RunningLevel:
    """Mean and variance of a session's speech so far, for normalising windows like whole clips."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.squares = 0.0

    def add(self, samples: np.ndarray) -> None:
        x = samples.astype(np.float64)
        self.count += x.size
        self.total += float(x.sum())
        self.squares += float((x * x).sum())

    def stats(self, fallback: np.ndarray) -> tuple[float, float]:
        if self.count == 0:
            x = fallback.astype(np.float64)
            return float(x.mean()), float(x.var())
        mean = self.total / self.count
        return mean, max(self.squares / self.count - mean * mean, 0.0)


class StreamingAudioFeatures:
    """One session's features, step by step, from the speech of each step plus a look-ahead.

    `features(speech, frames)` takes the step's speech (sample 0 = the step's first frame,
    at least (frames + lookahead_frames) * 1000 samples; shorter is zero-padded) and returns
    [frames, feature_dim]. The window also holds up to `context_frames` frames of earlier
    speech from this stream. `reset()` forgets that context (an interrupt, or a jump in the
    timeline); the running level survives so the next words are scaled like the last.
    """

    def __init__(
        self,
        encoder: Wav2VecEncoder,
        *,
        context_frames: int = 48,
        lookahead_frames: int = 4,
        silence_cache: dict | None = None,
    ) -> None:
        if context_frames < 0 or lookahead_frames < 0:
            raise ValueError("context_frames and lookahead_frames must be >= 0")
        self.encoder = encoder
        self.context_frames = context_frames
        self.lookahead_frames = lookahead_frames
        self.level = RunningLevel()
        self._history = np.zeros(0, np.float32)
        # Features of an all-silent window depend only on its shape; shared across a
        # stream's idle blocks (and across streams when the engine passes one dict).
        self.silence_features = silence_cache if silence_cache is not None else {}

    @property
    def lookahead_samples(self) -> int:
        return self.lookahead_frames * FRAME_SAMPLES

    @property
    def context_held(self) -> int:
        """Frames of earlier speech the next window will include."""
        return self._history.shape[0] // FRAME_SAMPLES

    def reset(self) -> None:
        self._history = np.zeros(0, np.float32)

    def features(self, speech: np.ndarray, frames: int, *, is_speech: bool = True) -> torch.Tensor:
        need = (frames + self.lookahead_frames) * FRAME_SAMPLES
        step = np.zeros(need, np.float32)
        given = np.asarray(speech, dtype=np.float32)[:need]
        step[: given.shape[0]] = given
        if is_speech and np.any(step):
            self.level.add(step[: frames * FRAME_SAMPLES])
        window = np.concatenate([self._history, step])
        context = self._history.shape[0] // FRAME_SAMPLES
        window_frames = window.shape[0] // FRAME_SAMPLES + 1
        if not np.any(window):
            key = (window.shape[0], window_frames, context, frames)
            if key not in self.silence_features:
                self.silence_features[key] = self.encoder.encode(window, window_frames)[context : context + frames]
            out = self.silence_features[key]
        else:
            mean, var = self.level.stats(window)
            normalised = ((window - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)
            out = self.encoder.encode(normalised, window_frames)[context : context + frames]
        kept = np.concatenate([self._history, step[: frames * FRAME_SAMPLES]])
        self._history = kept[max(0, kept.shape[0] - self.context_frames * FRAME_SAMPLES) :]
        return out


@dataclass(frozen=True)
class DifferenceRow:
    context_frames: int
    lookahead_frames: int
    #: Mean over frames of |stream - whole| / |whole| (L2 over the feature vector).
    mean_relative: float
    #: The same for the worst frame.
    max_relative: float
    #: Mean cosine similarity of the per-frame vectors.
    mean_cosine: float

    @property
    def lookahead_ms(self) -> float:
        return self.lookahead_frames * 1000.0 / 16.0


def streaming_steps(total_frames: int, first: int = 9, later: int = 12) -> list[tuple[int, int]]:
    """(first frame, frames) of the engine's steps covering `total_frames` video frames."""
    steps, start = [], 0
    while start < total_frames:
        n = min(first if start == 0 else later, total_frames - start)
        steps.append((start, n))
        start += n
    return steps


def streaming_difference_table(
    encoder: Wav2VecEncoder,
    waveform: np.ndarray,
    lookaheads: Sequence[int],
    contexts: Sequence[int] = (48,),
) -> list[DifferenceRow]:
    """Compare streamed features with whole-clip features of the same clip, frame by frame."""
    total = len(waveform) // FRAME_SAMPLES + 1
    clip = np.asarray(waveform, np.float32)[: (total - 1) * FRAME_SAMPLES]
    whole = whole_clip_features(clip, total, encoder)
    rows = []
    for context in contexts:
        for lookahead in lookaheads:
            stream = StreamingAudioFeatures(encoder, context_frames=context, lookahead_frames=lookahead)
            parts = []
            for start, n in streaming_steps(total):
                # The step's speech: the clip from the step's first frame, silence past its end.
                parts.append(stream.features(clip[start * FRAME_SAMPLES :], n))
            streamed = torch.cat(parts)
            err = (streamed - whole).norm(dim=-1) / whole.norm(dim=-1).clamp_min(1e-12)
            cos = F.cosine_similarity(streamed, whole, dim=-1)
            rows.append(DifferenceRow(context, lookahead, err.mean().item(), err.max().item(), cos.mean().item()))
    return rows


def format_difference_table(rows: Sequence[DifferenceRow]) -> str:
    lines = ["context (frames)  look-ahead (frames / ms)  mean rel. diff  max rel. diff  mean cosine"]
    for r in rows:
        lines.append(
            f"{r.context_frames:>16}  {r.lookahead_frames:>10} / {r.lookahead_ms:>6.1f}  "
            f"{r.mean_relative:>14.4f}  {r.max_relative:>13.4f}  {r.mean_cosine:>11.4f}"
        )
    return "\n".join(lines)
