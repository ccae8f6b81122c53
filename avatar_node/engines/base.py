"""The engine contract: what turns conditioning into frames.

An engine is shared by every session on a node. `prepare` turns a photo into an
`Identity` once (the node caches it by content hash); `open` starts one session's
`EngineStream`; `step` produces the next `frames_per_step` frames from the
conditioning for exactly those frames. `step_batch` lets an engine that can batch
(the GPU engine) serve several sessions in one call; the scheduler always calls it.

Timing conventions (one media clock):
- A stream's frames are numbered k = 0, 1, 2, ... at `StreamOptions.fps`.
  `Conditioning.frame_index` is the index of a step's first frame. Steps normally
  follow each other; a live session that falls behind real time skips frames to stay
  on time, so the next step may start later than the previous one ended. Engines take
  time from the index (t = k / fps), never from a count of calls.
- `Conditioning.speech` is mono float32 at `SPEECH_SAMPLE_RATE` and covers
  [start of this step's first frame, end of its last frame + audio_lookahead_ms).
  Sample 0 is the instant the first frame of the step is shown.
- Phoneme events are given in seconds relative to that same instant.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar_node.errors import AvatarInputError as AvatarInputError  # engines raise it; re-exported here

#: Sample rate of the audio engines receive (speech and listen). wav2vec2 and Whisper use it.
SPEECH_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class EngineInfo:
    name: str
    native_fps: float
    frames_per_step: int
    #: Future speech audio a step needs beyond its last frame.
    audio_lookahead_ms: int
    #: Most streams one `step_batch` call takes (1 = no batching).
    max_batch: int = 1
    description: str = ""


@dataclass(frozen=True)
class FaceBox:
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Identity:
    """A prepared reference photo. `data` is engine-specific and read-only."""

    avatar_id: str  # sha256 of the photo bytes (hex, first 32 chars) + engine name
    engine: str
    image_width: int
    image_height: int
    face: FaceBox | None
    faces_found: int
    data: Any = field(repr=False, compare=False)
    #: Advice for the user: the avatar works, and this would make it better (a short clip).
    notes: tuple[str, ...] = ()


#: How the photo is placed on the canvas: "auto" frames the head and shoulders when the
#: photo allows it (else as "fit"); "fit" shows the whole photo.
FRAMINGS = ("auto", "fit")


@dataclass(frozen=True)
class StreamOptions:
    width: int = 848
    height: int = 480
    fps: float = 25.0
    prompt: str = ""
    seed: int = 0
    framing: str = "auto"


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme of synthesised speech, times in seconds relative to the step's first frame."""

    start_s: float
    end_s: float
    phoneme: str  # espeak-ng / IPA-ish symbol, e.g. "m", "a:", "O"


@dataclass(frozen=True)
class TurnAudio:
    """The speech turn playing at the end of a step, beyond the step and its look-ahead: what
    of it arrived since the previous step, for engines that read more of a turn than that
    (a speech model trained on whole clips). Samples at SPEECH_SAMPLE_RATE, counted from the
    turn's start."""

    #: The turn's number in its session; a new number is a new turn.
    turn: int
    #: Turn samples before the step's first frame (negative: the turn starts inside the step).
    offset: int
    #: Turn sample of `arrived[0]`.
    start: int
    #: float32 mono: the turn's audio that arrived since the previous step (everything, once).
    arrived: np.ndarray
    #: The turn is closed and all of its audio has been handed over.
    complete: bool


@dataclass
class Conditioning:
    """Everything the engine may use to render the next step's frames."""

    #: Speech the avatar says (float32 mono, SPEECH_SAMPLE_RATE), zeros when silent.
    speech: np.ndarray
    #: Per frame of the step: whether that frame belongs to a speech turn.
    speaking: Sequence[bool]
    #: The user's voice over the same span (float32 mono, SPEECH_SAMPLE_RATE), zeros if none.
    listen: np.ndarray
    #: Phonemes of text-driven speech overlapping this span (may extend past it).
    phonemes: Sequence[PhonemeEvent] = ()
    #: Behaviour triggers that arrived since the previous step ("nod", "smile", ...).
    behaviours: Sequence[str] = ()
    #: The current behaviour prompt, for engines that take one.
    prompt: str = ""
    #: Index of the step's first frame on the stream's timeline (see the module notes).
    frame_index: int = 0
    #: New audio of the turn playing at the step's end, if any (see TurnAudio).
    turn_audio: TurnAudio | None = None


class EngineStream(abc.ABC):
    """One session's state inside an engine."""

    @abc.abstractmethod
    def step(self, cond: Conditioning) -> list[np.ndarray]:
        """Render the next `frames_per_step` frames (RGB uint8, HxWx3, C-contiguous).

        Frames may be any size; the node fits them into the output canvas. An engine
        that renders straight at (options.height, options.width) saves that work.
        """

    def next_step_frames(self) -> int | None:
        """Frames the next `step` will return, when it differs from the engine's
        `frames_per_step` (a diffusion engine's first block is shorter); None = the default.
        The node cuts that many frames of speech for the step."""
        return None

    def reset_speech(self) -> None:
        """Speech was interrupted: forget speech-driven state (mouth, audio context)."""

    def close(self) -> None:
        """Free this stream's resources. Called exactly once."""


class Engine(abc.ABC):
    info: EngineInfo

    #: Behaviour names this engine acts on (others are reported back as unknown).
    behaviours: frozenset[str] = frozenset()

    @abc.abstractmethod
    def prepare(self, image: bytes) -> Identity:
        """Decode and analyse a photo. Raise AvatarInputError for unusable input."""

    @abc.abstractmethod
    def open(self, identity: Identity, options: StreamOptions) -> EngineStream:
        """Start a stream for one session."""

    def realtime_capacity(self) -> int | None:
        """Live sessions this engine can keep at 1x on this machine, if it knows (a GPU
        engine measures it at start); None lets the node estimate it from step times."""
        return None

    def step_batch(
        self, streams: Sequence[EngineStream], conds: Sequence[Conditioning]
    ) -> list[list[np.ndarray]]:
        """Step several streams at once. The default steps them one by one."""
        return [s.step(c) for s, c in zip(streams, conds)]

    def close(self) -> None:
        """Release engine-wide resources (models, pools)."""
