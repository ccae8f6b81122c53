"""Configuration of the streaming DiT: network shapes and the streaming recipe.

`DiTConfig()` is the released 1.3B student; `DiTConfig.tiny()` is the same network
shrunk for tests. `StreamConfig()` is the released sampling recipe (blocks of 3
latent frames, 4 steps at shift 5, a 15-frame window with 9 sink frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: How temporal RoPE positions are assigned to the frames a block sees.
#: "window": positions are slots in the attention window (sinks first), so they never
#: grow and a session can run for hours. "absolute": the frame number, as the
#: release does (its RoPE table ends at 1024 latent frames, about 256 s of video).
PositionScheme = Literal["window", "absolute"]


@dataclass(frozen=True)
class DiTConfig:
    """Shapes of the causal DiT (Wan2.1 backbone + audio path)."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    #: Noisy latent (16) + reference latent (16) + first-frame mask (1).
    in_dim: int = 33
    out_dim: int = 16
    text_dim: int = 4096
    #: Tokens of the pre-encoded prompt; shorter prompts are zero-padded to this.
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    rope_theta: float = 10000.0
    #: Per video frame: wav2vec2 last hidden state + its 13 hidden states, 14 x 768.
    audio_feature_dim: int = 10752
    #: Video frames folded into one latent frame (the VAE's temporal stride).
    audio_frames_per_latent: int = 4
    audio_hidden_dim: int = 32

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} must be a multiple of num_heads {self.num_heads}")
        axis = self.head_dim // 3
        if self.head_dim % 2 or axis % 2:
            raise ValueError(
                f"head_dim {self.head_dim} must be even with head_dim // 3 even, "
                "so RoPE can split it into time/height/width pairs"
            )
        if self.patch_size[0] != 1:
            raise ValueError("a temporal patch size other than 1 is not supported")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def latent_channels(self) -> int:
        return self.out_dim

    @property
    def audio_layers(self) -> tuple[int, ...]:
        """DiT layers that receive an audio projection before they run: 2 .. num_layers // 2."""
        return tuple(range(2, self.num_layers // 2 + 1))

    @classmethod
    def tiny(cls, **overrides: object) -> "DiTConfig":
        """A few-thousand-parameter version of the same network, for CPU tests."""
        values: dict[str, object] = dict(
            dim=48,
            ffn_dim=96,
            num_heads=2,
            num_layers=6,
            text_dim=16,
            text_len=8,
            freq_dim=16,
            audio_feature_dim=12,
            audio_hidden_dim=8,
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StreamConfig:
    """The block-causal streaming recipe."""

    frames_per_block: int = 3
    #: Latent frames one block attends to, itself included.
    window_frames: int = 15
    #: The first latent frames of a session, never evicted (frame 0 is the reference).
    sink_frames: int = 9
    num_steps: int = 4
    shift: float = 5.0
    positions: PositionScheme = "window"
    #: Frames whose K/V the cache keeps between blocks.
    cached_frames: int = field(init=False)

    def __post_init__(self) -> None:
        if self.frames_per_block < 1 or self.num_steps < 1:
            raise ValueError("frames_per_block and num_steps must be at least 1")
        if self.sink_frames < 0:
            raise ValueError("sink_frames must be >= 0")
        if self.window_frames < self.sink_frames + self.frames_per_block:
            raise ValueError(
                f"window_frames ({self.window_frames}) must hold the sink frames "
                f"({self.sink_frames}) plus one block ({self.frames_per_block})"
            )
        if self.positions not in ("window", "absolute"):
            raise ValueError(f"positions must be 'window' or 'absolute', not {self.positions!r}")
        object.__setattr__(self, "cached_frames", self.window_frames - self.frames_per_block)
