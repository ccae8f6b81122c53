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
    def tiny(cls, **overrides: object) -> DiTConfig:
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


@dataclass(frozen=True)
class VAEConfig:
    """Shapes of the Wan2.1 causal video VAE. The default is the released one (base width 96)."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    #: Per downsampling stage of the encoder: whether it also halves time.
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    def __post_init__(self) -> None:
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError("temporal_downsample needs one entry per downsampling stage (len(dim_mult) - 1)")

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @classmethod
    def tiny(cls) -> VAEConfig:
        return cls(dim=8)


@dataclass(frozen=True)
class TextEncoderConfig:
    """Shapes of the umT5 encoder (Wan2.1's ``models_t5_umt5-xxl-enc-bf16.pth``)."""

    vocab_size: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    #: Tokens the prompt is padded or truncated to (the DiT's text_len).
    text_len: int = 512

    @classmethod
    def tiny(cls, vocab_size: int = 64, dim: int = 16, text_len: int = 8) -> TextEncoderConfig:
        return cls(
            vocab_size=vocab_size, dim=dim, dim_attn=dim, dim_ffn=2 * dim, num_heads=2, num_layers=2, text_len=text_len
        )


#: Sections of the optional config.json beside the DiT, and the classes they fill.
_SECTIONS = {"dit": DiTConfig, "vae": VAEConfig, "text_encoder": TextEncoderConfig}


@dataclass(frozen=True)
class ModelConfig:
    """Every shape the engine needs: the released full size unless config.json says otherwise."""

    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    #: Size of the generated video in pixels (the reference crop is resized to it).
    video_height: int = 512
    video_width: int = 512

    def __post_init__(self) -> None:
        stride = self.vae.spatial_stride * self.dit.patch_size[1]
        if self.video_height % stride or self.video_width % stride:
            raise ValueError(f"video size {self.video_width}x{self.video_height} must be a multiple of {stride}")
        if self.vae.z_dim != self.dit.latent_channels:
            raise ValueError(
                f"the VAE's z_dim ({self.vae.z_dim}) must equal the DiT's latent channels ({self.dit.latent_channels})"
            )
        if self.text_encoder.dim != self.dit.text_dim:
            raise ValueError(
                f"the text encoder's width ({self.text_encoder.dim}) must equal the DiT's text_dim "
                f"({self.dit.text_dim})"
            )

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.video_height // self.vae.spatial_stride, self.video_width // self.vae.spatial_stride

    def to_json(self) -> dict[str, object]:
        from dataclasses import asdict

        out: dict[str, object] = {name: asdict(getattr(self, name)) for name in _SECTIONS}
        out["video"] = {"height": self.video_height, "width": self.video_width}
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ModelConfig:
        """Read config.json; unknown sections or fields are errors, missing ones keep the default."""
        if not isinstance(data, dict):
            raise ValueError("config.json must hold a JSON object")
        unknown = sorted(set(data) - set(_SECTIONS) - {"video"})
        if unknown:
            raise ValueError(
                f"config.json: unknown section(s) {', '.join(unknown)}; known: dit, vae, text_encoder, video"
            )
        values: dict[str, object] = {}
        for name, kind in _SECTIONS.items():
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise ValueError(f"config.json: {name!r} must be an object")
            fields = set(kind.__dataclass_fields__)  # type: ignore[attr-defined]
            bad = sorted(set(section) - fields)
            if bad:
                raise ValueError(f"config.json: unknown field(s) in {name!r}: {', '.join(bad)}")
            tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
            try:
                values[name] = kind(**tuples)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"config.json: section {name!r}: {exc}") from None
        video = data.get("video", {})
        if not isinstance(video, dict) or set(video) - {"height", "width"}:
            raise ValueError("config.json: 'video' must be an object with 'height' and 'width'")
        return cls(
            video_height=int(video.get("height", 512)),
            video_width=int(video.get("width", 512)),
            **values,  # type: ignore[arg-type]
        )
