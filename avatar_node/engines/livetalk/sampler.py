"""Block-causal few-step flow-matching sampling, batched over independent sessions.

One `BlockSampler.step` produces the next block (3 latent frames) of every session given:
4 denoising passes at the release's timesteps (shift 5: model timesteps 1000, 936, 832,
624 after bf16 rounding, noise levels 1, 0.9375, 0.8333, 0.625). Each pass predicts the
flow, from which the clean block is estimated (x0 = x - sigma * flow) and re-noised with
fresh noise to the next level; a fifth pass at t=0 on the clean block writes its K/V to the
session's cache. The reference latent is forced into latent frame 0 of each session, before
every pass and in the output, and the mask channel marks frame 0 (0) from the rest (1).

Sessions in one call may be at different points of their lives: each has its own cache,
sinks, positions, prompt and noise generator, and only the self-attention runs per session.

`offline_block_pass` is the reference the streaming path is tested against: one forward
over all blocks at once (clean context frames plus the noisy frames being denoised), each
block attending to exactly the frames and positions window.py says, with no cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .cache import SessionKVCache
from .config import StreamConfig
from .model import LiveTalkDiT, PromptConditioning, apply_rope, attention, rope_cos_sin
from .window import block_view


@dataclass(frozen=True)
class FlowSchedule:
    #: Noise level of each step (1 = pure noise).
    sigmas: tuple[float, ...]
    #: Timestep fed to the network at each step (sigma * 1000, rounded to bf16 as released).
    timesteps: tuple[float, ...]

    @classmethod
    def few_step(cls, num_steps: int = 4, shift: float = 5.0) -> FlowSchedule:
        base = [1.0 - i / num_steps for i in range(num_steps)]
        sigmas = tuple(shift * s / (1.0 + (shift - 1.0) * s) for s in base)
        rounded = torch.tensor([1000.0 * s for s in sigmas]).to(torch.bfloat16).float().tolist()
        return cls(sigmas, tuple(rounded))


@dataclass
class SessionState:
    """Everything one session carries between blocks."""

    cache: SessionKVCache
    prompt: PromptConditioning
    #: Reference latent [16, H, W], forced into the session's latent frame 0.
    reference: torch.Tensor
    generator: torch.Generator

    @property
    def blocks_done(self) -> int:
        return self.cache.blocks_done


def reference_condition(reference: torch.Tensor, frames: int, session_start: bool) -> torch.Tensor:
    """The 17 conditioning channels for `frames` frames: [17, frames, H, W]. The mask is 0 on
    the session's very first frame (when `session_start`), else 1."""
    latent = reference[:, None].expand(-1, frames, -1, -1)
    mask = torch.ones((1, frames) + tuple(reference.shape[-2:]), dtype=reference.dtype, device=reference.device)
    if session_start:
        mask[:, 0] = 0.0
    return torch.cat([latent, mask])


class BlockSampler:
    def __init__(self, model: LiveTalkDiT, stream: StreamConfig | None = None) -> None:
        self.model = model
        self.stream = stream or StreamConfig()
        self.schedule = FlowSchedule.few_step(self.stream.num_steps, self.stream.shift)

    def open_session(
        self,
        reference_latent: torch.Tensor,
        prompt: torch.Tensor | PromptConditioning,
        seed: int = 0,
    ) -> SessionState:
        """Start a session from its reference latent [16, H, W] and prompt embeddings [tokens, text_dim]."""
        model = self.model
        channels = model.cfg.latent_channels
        ph, pw = model.cfg.patch_size[1:]
        if reference_latent.ndim != 3 or reference_latent.shape[0] != channels:
            raise ValueError(f"reference latent must be [{channels}, H, W], got {tuple(reference_latent.shape)}")
        height, width = reference_latent.shape[1:]
        if height % ph or width % pw:
            raise ValueError(f"latent size {height}x{width} must be a multiple of the patch size {ph}x{pw}")
        with torch.no_grad():
            conditioning = prompt if isinstance(prompt, PromptConditioning) else model.encode_prompt(prompt)
        cache = SessionKVCache(
            model.cfg, self.stream, (height // ph, width // pw), device=model.device, dtype=model.dtype
        )
        generator = torch.Generator(device=model.device)
        generator.manual_seed(seed)
        return SessionState(cache, conditioning, reference_latent.to(model.device, torch.float32), generator)

    def draw_noise(self, session: SessionState) -> torch.Tensor:
        """The noise one block uses: [steps, 16, frames, H, W] (initial noise, then each re-noising)."""
        shape: tuple[int, ...] = (self.stream.num_steps, self.model.cfg.latent_channels, self.stream.frames_per_block)
        shape += tuple(session.reference.shape[-2:])
        return torch.randn(shape, generator=session.generator, device=session.reference.device)

    def step(
        self,
        sessions: Sequence[SessionState],
        audio_features: torch.Tensor,
        noise: torch.Tensor | None = None,
        *,
        first_frames: Sequence[int] | None = None,
        prompts: Sequence[PromptConditioning] | None = None,
        on_clean: Callable[[torch.Tensor], None] | None = None,
        exit_step: int | None = None,
    ) -> torch.Tensor:
        """Sample the next block of every session.

        audio_features: [sessions, frames_per_block, 4, audio_feature_dim] (see audio.py).
        noise: optional [sessions, steps, 16, frames_per_block, H, W]; drawn from each
        session's generator when omitted. first_frames: each block's first latent frame
        number (default: right after the session's previous block); a live session that
        skipped time passes a later one. prompts: replaces each session's prompt from this
        block on. on_clean: called with the clean latents before the cache pass, so work on
        them (decoding) can overlap that pass. Returns clean latents [sessions, 16, frames, H, W].

        exit_step (training rollouts): stop after that denoising step and return its clean
        estimate. Serving leaves it None. With it, and gradients enabled by the caller, that
        one step's forward keeps its graph (the other steps and the cache pass never do), so
        a Self-Forcing rollout backpropagates through exactly this code.
        """
        track = exit_step is not None and torch.is_grad_enabled()
        with torch.no_grad():
            return self._step(sessions, audio_features, noise, first_frames, prompts, on_clean, exit_step, track)

    def _step(
        self,
        sessions: Sequence[SessionState],
        audio_features: torch.Tensor,
        noise: torch.Tensor | None,
        first_frames: Sequence[int] | None,
        prompts: Sequence[PromptConditioning] | None,
        on_clean: Callable[[torch.Tensor], None] | None,
        exit_step: int | None,
        track: bool,
    ) -> torch.Tensor:
        if not sessions:
            raise ValueError("step() needs at least one session")
        model, per_block = self.model, self.stream.frames_per_block
        last = self.stream.num_steps - 1 if exit_step is None else exit_step
        if not 0 <= last < self.stream.num_steps:
            raise ValueError(f"exit_step must be in [0, {self.stream.num_steps}), got {exit_step}")
        shapes = {tuple(s.reference.shape) for s in sessions}
        if len(shapes) != 1:
            raise ValueError(f"sessions in one batch must share a latent size, got {sorted(shapes)}")
        if audio_features.shape[:2] != (len(sessions), per_block):
            raise ValueError(
                f"audio features must be [{len(sessions)}, {per_block}, 4, C], got {tuple(audio_features.shape)}"
            )
        if first_frames is not None:
            for session, first in zip(sessions, first_frames, strict=True):
                session.cache.start_block(first)
        if prompts is not None:
            for session, prompt_kv in zip(sessions, prompts, strict=True):
                session.prompt = prompt_kv
        if noise is None:
            noise = torch.stack([self.draw_noise(s) for s in sessions])
        noise = noise.to(model.device, torch.float32)

        with torch.set_grad_enabled(track):  # the conditioning's projections are trained too
            audio = model.pack_audio(audio_features)
            prompt = PromptConditioning.stack([s.prompt for s in sessions])
        starts_session = [s.blocks_done == 0 for s in sessions]
        condition = torch.stack(
            [reference_condition(s.reference, per_block, first) for s, first in zip(sessions, starts_session)]
        )

        def force_reference(latents: torch.Tensor) -> torch.Tensor:
            for i, session in enumerate(sessions):
                if starts_session[i]:
                    latents[i, :, 0] = session.reference
            return latents

        def attend_with(commit: bool):
            def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                outs = [s.cache.attend(layer, q[i], k[i], v[i], commit) for i, s in enumerate(sessions)]
                return outs[0][None] if len(outs) == 1 else torch.stack(outs)

            return attend

        def timesteps(value: float) -> torch.Tensor:
            return torch.full((len(sessions), per_block), value, device=model.device)

        sigmas, steps = self.schedule.sigmas, self.schedule.timesteps
        latents = noise[:, 0].clone()
        for index, (sigma, t) in enumerate(zip(sigmas[: last + 1], steps)):
            latents = force_reference(latents)
            with torch.set_grad_enabled(track and index == last):
                flow = model(latents, timesteps(t), condition, prompt, audio, attend_with(commit=False)).float()
                clean = latents - sigma * flow
            if index < last:
                next_sigma = sigmas[index + 1]
                latents = (1.0 - next_sigma) * clean + next_sigma * noise[:, index + 1]
        with torch.set_grad_enabled(track):
            clean = force_reference(clean)
        if on_clean is not None:
            on_clean(clean)
        model(clean.detach(), timesteps(0.0), condition, prompt, audio.detach(), attend_with(commit=True))
        for session in sessions:
            session.cache.finish_block()
        return clean


def offline_block_pass(
    model: LiveTalkDiT,
    stream: StreamConfig,
    clean: torch.Tensor,
    noisy: torch.Tensor,
    noisy_timesteps: torch.Tensor,
    condition: torch.Tensor,
    prompt: PromptConditioning,
    audio: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cache-free forward over whole sessions from their first block.

    clean, noisy: [N, 16, frames, H, W] with frames a multiple of the block size; block b of
    `noisy` attends to the clean frames block b may see (window.py) and to itself; block b of
    `clean` likewise, at timestep 0. noisy_timesteps: [N, frames]. condition: [N, 17, frames,
    H, W]; audio: [N, frames, audio_hidden_dim]. Returns the flows (clean_flow, noisy_flow).
    Gradients flow when the caller enables them (teacher-forced training uses this pass).
    """
    n, _, frames, height, width = clean.shape
    per_block = stream.frames_per_block
    if frames % per_block:
        raise ValueError(f"{frames} frames is not a whole number of {per_block}-frame blocks")
    ph, pw = model.cfg.patch_size[1:]
    grid_h, grid_w = height // ph, width // pw
    per_frame = grid_h * grid_w
    head_dim, theta = model.cfg.head_dim, model.cfg.rope_theta

    def frame_tokens(frame_numbers: Sequence[int]) -> torch.Tensor:
        frames_t = torch.tensor(list(frame_numbers), dtype=torch.long, device=model.device)
        return (frames_t[:, None] * per_frame + torch.arange(per_frame, device=model.device)).flatten()

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        streams = [t.split(frames * per_frame, dim=1) for t in (q, k, v)]  # (clean, noisy) each
        (_, _), (k_clean, _), (v_clean, _) = streams
        out = torch.empty_like(q)
        for block in range(frames // per_block):
            view = block_view(stream, block)
            own = frame_tokens(range(block * per_block, (block + 1) * per_block))
            context = frame_tokens(view.context_frames)
            ctx_cos, ctx_sin = rope_cos_sin(
                torch.tensor(view.context_positions, device=model.device), grid_h, grid_w, head_dim, theta
            )
            own_cos, own_sin = rope_cos_sin(
                torch.tensor(view.block_positions, device=model.device), grid_h, grid_w, head_dim, theta
            )
            context_k = apply_rope(k_clean[:, context], ctx_cos, ctx_sin)
            context_v = v_clean[:, context]
            for offset, (q_s, k_s, v_s) in zip((0, frames * per_frame), zip(*streams)):
                keys = torch.cat([context_k, apply_rope(k_s[:, own], own_cos, own_sin)], dim=1)
                values = torch.cat([context_v, v_s[:, own]], dim=1)
                out[:, offset + own] = attention(apply_rope(q_s[:, own], own_cos, own_sin), keys, values)
        return out

    latents = torch.cat([clean, noisy], dim=2)
    t = torch.cat([torch.zeros_like(noisy_timesteps), noisy_timesteps], dim=1)
    flow = model(latents, t, torch.cat([condition, condition], dim=2), prompt, torch.cat([audio, audio], dim=1), attend)
    return flow[:, :, :frames].float(), flow[:, :, frames:].float()
