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

Live, the engine computes them the same way over as much of the playing turn as has
arrived (`TurnAudioFeatures`): never less than the step plus the declared look-ahead, the
whole turn once it is all there (then exactly the release's features). A sliding window
(`StreamingAudioFeatures`: some past, the step, the look-ahead, normalised with running
statistics) is the simpler rule it replaced; `arrival_difference_table` measures both
against whole-clip features by how much of the turn is there when it starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, TurnAudio

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


@dataclass
class _Clip:
    """One turn's audio as far as it arrived, and the features last computed over it."""

    turn: int
    origin: int  # turn sample of audio[0] (0 unless the turn is longer than the window)
    audio: np.ndarray
    #: Turn frame of next step's first frame (where this turn's frames continue).
    next_frame: int = 0
    #: (window's first turn frame, its audio length) of `rows`; None = not computed yet.
    computed: tuple[int, int] | None = None
    rows: torch.Tensor | None = None

    @property
    def end(self) -> int:
        return self.origin + self.audio.shape[0]


class TurnAudioFeatures:
    """One session's features, each step from as much of the playing turn as has arrived.

    The release computes features over whole clips; live, a turn arrives as it is spoken, or
    (an agent's text-to-speech) mostly before it plays. So each step's features are those of
    the turn's audio from its start to whatever has arrived, computed the release's way
    (`whole_clip_features`): exact once the whole turn is there, and never less than the
    step plus the engine's look-ahead (the node waits for that much before a step). They are
    computed again only when new audio arrived. A turn longer than `max_clip_frames` is
    seen through a window of that length around the step. Frames outside a turn get the
    features of silence. `features(...)` is driven by the pipeline's `TurnAudio`.
    """

    def __init__(
        self,
        encoder: Wav2VecEncoder,
        *,
        lookahead_frames: int = 4,
        max_clip_frames: int = 480,
        silence_cache: dict | None = None,
    ) -> None:
        if max_clip_frames < 2 * (12 + lookahead_frames):
            raise ValueError("max_clip_frames must hold at least two steps and their look-ahead")
        self.encoder = encoder
        self.lookahead_frames = lookahead_frames
        self.max_clip_frames = max_clip_frames
        self.silence_features = silence_cache if silence_cache is not None else {}
        self._clip: _Clip | None = None
        self._previous: _Clip | None = None  # the turn before, while its last frames play
        #: Times the encoder ran over a turn (for tests and figures).
        self.computations = 0

    @property
    def turn(self) -> int | None:
        """The turn whose audio is held (TurnAudio.turn), if any."""
        return self._clip.turn if self._clip is not None else None

    def reset(self) -> None:
        """An interrupt: the turns that were playing are gone."""
        self._clip = self._previous = None

    def features(self, frames: int, speaking: Sequence[bool], turn_audio: TurnAudio | None) -> torch.Tensor:
        """[frames, feature_dim] for the step's frames (float32)."""
        if turn_audio is not None:
            self._take(turn_audio)
        rows: list[torch.Tensor | None] = [None] * frames
        if turn_audio is not None and self._clip is not None:
            first = turn_audio.offset // FRAME_SAMPLES
            self._fill(rows, self._clip, first, speaking)
            self._clip.next_frame = first + frames
            lead = min(max(-first, 0), frames)  # frames before the turn starts in this step
            if lead and self._previous is not None:
                self._fill(rows, self._previous, self._previous.next_frame, speaking, stop=lead)
                self._previous.next_frame += lead
        silent = self._silence(frames)
        return torch.stack([row if row is not None else silent[j] for j, row in enumerate(rows)])

    # -- the turn's audio ----------------------------------------------------------------------

    def _take(self, turn_audio: TurnAudio) -> None:
        clip = self._clip
        if clip is None or clip.turn != turn_audio.turn:
            if clip is not None:
                self._previous = clip
            clip = self._clip = _Clip(turn_audio.turn, turn_audio.start, np.zeros(0, np.float32))
        if turn_audio.start != clip.end:  # something was not handed over: start again from here
            clip.origin, clip.audio, clip.computed = turn_audio.start, np.zeros(0, np.float32), None
        if turn_audio.arrived.size:
            clip.audio = np.concatenate([clip.audio, np.asarray(turn_audio.arrived, np.float32)])

    def _window(self, clip: _Clip, first: int) -> tuple[int, int]:
        """(first turn frame, audio samples) of the stretch of `clip` that features come from."""
        origin_frame = -(-clip.origin // FRAME_SAMPLES)
        skip = origin_frame * FRAME_SAMPLES - clip.origin
        held = clip.audio.shape[0] - skip
        most = (self.max_clip_frames - 1) * FRAME_SAMPLES
        if held <= most:
            return origin_frame, max(held, 0)
        # Longer than a window: centre it on the step, inside what has arrived.
        last_start = origin_frame + (held - most) // FRAME_SAMPLES
        start = min(max(first - self.max_clip_frames // 2, origin_frame), last_start)
        return start, most

    def _rows(self, clip: _Clip, first: int) -> tuple[int, torch.Tensor]:
        window = self._window(clip, first)
        if clip.computed != window or clip.rows is None:
            start, length = window
            offset = start * FRAME_SAMPLES - clip.origin
            n = length // FRAME_SAMPLES + 1
            audio = clip.audio[offset : offset + (n - 1) * FRAME_SAMPLES]
            clip.rows = whole_clip_features(audio, n, self.encoder)
            clip.computed = window
            self.computations += 1
            # What lies before the window will not be read again.
            keep_from = max(0, offset - self.max_clip_frames * FRAME_SAMPLES)
            if keep_from:
                clip.audio, clip.origin = clip.audio[keep_from:], clip.origin + keep_from
        assert clip.computed is not None and clip.rows is not None
        return clip.computed[0], clip.rows

    def _fill(
        self,
        rows: list[torch.Tensor | None],
        clip: _Clip,
        first: int,
        speaking: Sequence[bool],
        stop: int | None = None,
    ) -> None:
        """Rows of the step's speaking frames j < stop that fall in `clip` (turn frame first + j)."""
        stop = len(rows) if stop is None else stop
        wanted = [j for j in range(stop) if speaking[j]]
        if not wanted or clip.end <= clip.origin:
            return
        start, features = self._rows(clip, first)
        for j in wanted:
            k = first + j - start
            if 0 <= k < features.shape[0]:
                rows[j] = features[k]

    def _silence(self, frames: int) -> torch.Tensor:
        key = ("turn", frames, self.lookahead_frames)
        if key not in self.silence_features:
            n = frames + self.lookahead_frames + 1
            self.silence_features[key] = self.encoder.encode(np.zeros((n - 1) * FRAME_SAMPLES, np.float32), n)[:frames]
        return self.silence_features[key]


def streaming_steps(total_frames: int, first: int = 9, later: int = 12) -> list[tuple[int, int]]:
    """(first frame, frames) of the engine's steps covering `total_frames` video frames."""
    steps, start = [], 0
    while start < total_frames:
        n = min(first if start == 0 else later, total_frames - start)
        steps.append((start, n))
        start += n
    return steps


@dataclass(frozen=True)
class Distance:
    """How far features are from the whole clip's: per frame |f - whole| / |whole| (L2)."""

    mean_relative: float
    max_relative: float

    @classmethod
    def between(cls, features: torch.Tensor, whole: torch.Tensor) -> Distance:
        err = (features - whole).norm(dim=-1) / whole.norm(dim=-1).clamp_min(1e-12)
        return cls(err.mean().item(), err.max().item())


@dataclass(frozen=True)
class ArrivalRow:
    #: Share of the turn there when it starts playing; the rest arrives at 1x (0 = live speech).
    arrived: float
    window: Distance  # a sliding window: `context_frames` of the past, the look-ahead
    turn: Distance  # as much of the turn as has arrived (TurnAudioFeatures)
    computations: int  # times TurnAudioFeatures ran the encoder over the turn


def arrival_difference_table(
    encoder: Wav2VecEncoder,
    waveform: np.ndarray,
    fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    lookahead_frames: int = 4,
    context_frames: int = 48,
) -> list[ArrivalRow]:
    """Features of one turn played step by step, against the whole clip's, for turns that are
    partly there when they start (an agent's text-to-speech runs ahead) and arrive at 1x after."""
    total = len(waveform) // FRAME_SAMPLES + 1
    clip = np.asarray(waveform, np.float32)[: (total - 1) * FRAME_SAMPLES]
    whole = whole_clip_features(clip, total, encoder)
    rows = []
    for fraction in fractions:
        window = StreamingAudioFeatures(encoder, context_frames=context_frames, lookahead_frames=lookahead_frames)
        turn = TurnAudioFeatures(encoder, lookahead_frames=lookahead_frames)
        by_window, by_turn, handed = [], [], 0
        for start, n in streaming_steps(total):
            by_window.append(window.features(clip[start * FRAME_SAMPLES :], n))
            # What has arrived when this step is rendered: never less than the node waits for.
            ahead = round(fraction * clip.size) + start * FRAME_SAMPLES
            there = min(max(ahead, (start + n + lookahead_frames) * FRAME_SAMPLES), clip.size)
            audio = TurnAudio(1, start * FRAME_SAMPLES, handed, clip[handed:there], complete=there == clip.size)
            handed = max(handed, there)
            by_turn.append(turn.features(n, [True] * n, audio))
        rows.append(
            ArrivalRow(
                fraction,
                Distance.between(torch.cat(by_window), whole),
                Distance.between(torch.cat(by_turn), whole),
                turn.computations,
            )
        )
    return rows


def format_arrival_table(rows: Sequence[ArrivalRow]) -> str:
    lines = [
        "turn there at start   sliding window: mean / max rel. diff   whole turn so far: mean / max   encoder runs",
    ]
    for r in rows:
        lines.append(
            f"{r.arrived:>17.0%}   {r.window.mean_relative:>22.4f} / {r.window.max_relative:<8.4f}"
            f"   {r.turn.mean_relative:>17.2e} / {r.turn.max_relative:<9.2e}   {r.computations:>12}"
        )
    return "\n".join(lines)
