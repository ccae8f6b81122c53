"""Training configuration: every value of the release's recipe is a field, and the defaults
are the release's (see the LiveTalk configs: stage 1 ODE regression, stage 2 DMD).

A run is configured by one JSON file (`TrainConfig.from_json`) or by the dataclasses
directly (tests). Unknown fields are errors, so a typo cannot silently keep a default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from avatar_node.engines.livetalk.config import DiTConfig, StreamConfig

#: The 14B teacher's shapes (OmniAvatar-14B on Wan2.1-T2V-14B); other fields as the 1.3B.
TEACHER_14B = {"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40}


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    betas: tuple[float, float]
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    eps: float = 1e-8


@dataclass(frozen=True)
class ODEConfig:
    """Stage 1: the causal student regresses the teacher's clean trajectory ends."""

    steps: int = 20_000
    #: Samples per optimizer step over all processes.
    global_batch: int = 64
    optim: OptimConfig = OptimConfig(lr=4e-5, betas=(0.9, 0.999))
    #: Flow-matching Euler steps of the teacher per trajectory (a multiple of the student's steps).
    teacher_steps: int = 48
    guidance_scale: float = 6.0


@dataclass(frozen=True)
class DMDConfig:
    """Stage 2: distribution matching distillation with Self-Forcing rollouts."""

    steps: int = 5_000
    global_batch: int = 64
    generator_optim: OptimConfig = OptimConfig(lr=4e-6, betas=(0.0, 0.999))
    critic_optim: OptimConfig = OptimConfig(lr=8e-7, betas=(0.0, 0.999))
    #: Critic (fake score) updates per generator update.
    critic_per_generator: int = 5
    #: Real score: uncond + scale * (cond - uncond), i.e. cond + (scale - 1) * (cond - uncond).
    guidance_scale: float = 6.0
    ema_decay: float = 0.99
    ema_start_step: int = 200
    #: DMD noise levels: uniform, then shifted, then clamped to [min, max] timesteps (of 1000).
    timestep_shift: float = 5.0
    min_timestep: float = 20.0
    max_timestep: float = 980.0
    #: Blocks whose frames get no generator gradient (the first block follows the reference).
    masked_blocks: int = 1
    #: Frames left out of the critic's loss (frame 0 is the reference latent).
    critic_masked_frames: int = 1


@dataclass(frozen=True)
class TrainConfig:
    """One training run (either stage); `stage` picks which section drives the loop."""

    stage: str = "ode"
    seed: int = 0
    #: Latent frames per training clip (21 = 7 blocks = 81 video frames).
    latent_frames: int = 21
    dit: DiTConfig = field(default_factory=DiTConfig)
    teacher: DiTConfig = field(default_factory=DiTConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    ode: ODEConfig = field(default_factory=ODEConfig)
    dmd: DMDConfig = field(default_factory=DMDConfig)
    #: bf16 autocast for the forward passes (weights and optimizer stay float32).
    bf16: bool = True
    gradient_checkpointing: bool = True
    #: Shard the frozen teacher across the processes (FSDP) instead of a whole copy on each.
    fsdp_teacher: bool = False
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if self.stage not in ("ode", "dmd"):
            raise ValueError(f"stage must be 'ode' or 'dmd', not {self.stage!r}")
        if self.latent_frames % self.stream.frames_per_block:
            raise ValueError(
                f"latent_frames ({self.latent_frames}) must be whole blocks of {self.stream.frames_per_block}"
            )
        if self.ode.teacher_steps % self.stream.num_steps:
            raise ValueError(
                f"ode.teacher_steps ({self.ode.teacher_steps}) must be a multiple of the student's "
                f"{self.stream.num_steps} steps, so the teacher's path passes through the student's noise levels"
            )

    @property
    def video_frames(self) -> int:
        return 4 * self.latent_frames - 3

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["stream"].pop("cached_frames", None)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, "config")

    @classmethod
    def load(cls, path: Path | str) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the training config {path}: {exc}") from None
        return cls.from_json(data)

    def with_changes(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


_NESTED: dict[str, type] = {
    "dit": DiTConfig,
    "teacher": DiTConfig,
    "stream": StreamConfig,
    "ode": ODEConfig,
    "dmd": DMDConfig,
    "optim": OptimConfig,
    "generator_optim": OptimConfig,
    "critic_optim": OptimConfig,
}


def _build(kind: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object")
    known = {f.name for f in fields(kind) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name in _NESTED:
            if name == "teacher" and value == "14B":
                value = TEACHER_14B
            values[name] = _build(_NESTED[name], value, f"{where}.{name}")
        else:
            values[name] = tuple(value) if isinstance(value, list) else value
    try:
        return kind(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
