"""The LiveTalk causal DiT: a Wan2.1 video transformer with an additive audio path.

Facts taken from the public release (GAIR-NLP/LiveTalk, built on Wan2.1 and OmniAvatar),
restated here so the code can be checked against them:

* Module and parameter names are those of the released ``model.safetensors`` (no prefix):
  ``patch_embedding``, ``text_embedding.{0,2}``, ``time_embedding.{0,2}``,
  ``time_projection.1``, ``blocks.N.{self_attn,cross_attn}.{q,k,v,o,norm_q,norm_k}``,
  ``blocks.N.{norm3,ffn.0,ffn.2,modulation}``, ``head.{head,modulation}``,
  ``audio_proj.{proj,norm_out}`` and ``audio_cond_projs.N``. The classes below keep those
  names so the state dict loads as it is.
* 1.3B shapes: width 1536, 12 heads of 128, 30 layers, FFN 8960, patch (1, 2, 2), 33 input
  channels (noisy latent, reference latent, first-frame mask), 16 output channels,
  text width 4096 (umT5-XXL, 512 tokens, zero padded), 256-dim sinusoidal time features.
* A block: adaptive LayerNorm (6 modulation vectors per latent frame from the timestep),
  self-attention with RMS-normalised q/k and 3-D RoPE (the 128 head dims split 44 time,
  42 height, 42 width, rotating adjacent pairs), gated residual; text cross-attention
  after an affine LayerNorm, ungated; a tanh-GELU FFN, gated.
* The audio path: per latent frame, the 10752-dim wav2vec2 features of its 4 video frames
  are concatenated (frame-major), projected to 32 dims and LayerNorm-ed ("AudioPack");
  one linear map 32 -> 1536 per layer adds the result, broadcast over the frame's tokens,
  to the hidden state before layers 2 to 15 (14 maps).
* The timestep is given per latent frame, so each frame has its own modulation.

What the self-attention sees (which frames, at which RoPE positions) is not decided
here: the caller passes an ``attend`` function, so the same network serves the
streaming KV cache (cache.py) and the offline block-causal reference pass (sampler.py).
Run ``python -m avatar_node.engines.livetalk.model --keys`` to print the full-size
parameter names and shapes as JSON; the model is built on the meta device.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import DiTConfig

#: The self-attention core a caller supplies: (layer index, q, k, v) -> output.
#: q, k, v are [sessions, tokens, heads, head_dim], normalised but not yet rotated.
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- helpers


def sinusoidal_embedding(dim: int, timesteps: torch.Tensor) -> torch.Tensor:
    """Cosine-then-sine features of the (float) timesteps, computed in float64."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float64, device=timesteps.device) / half
    angles = timesteps.to(torch.float64)[:, None] * torch.pow(10000.0, -exponents)[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Head dims rotated by time, height and width (128 -> 44, 42, 42)."""
    axis = head_dim // 3
    return head_dim - 2 * axis, axis, axis


def _inverse_frequencies(dims: int, theta: float) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, dims, 2, dtype=torch.float64)[: dims // 2] / dims)


def rope_cos_sin(
    frame_positions: torch.Tensor, height: int, width: int, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the 3-D RoPE angles for frames at `frame_positions`, tokens in (f, h, w) order.

    Angles are computed in float64 from the positions themselves, not read from a table,
    so any position is allowed. Returns two float32 tensors [frames*height*width, 1, head_dim/2].
    """
    t_dims, h_dims, w_dims = rope_axis_dims(head_dim)
    device = frame_positions.device
    positions = frame_positions.to(torch.float64)
    frames = positions.shape[0]
    t_angles = positions[:, None] * _inverse_frequencies(t_dims, theta).to(device)
    h_angles = torch.arange(height, dtype=torch.float64, device=device)[:, None] * _inverse_frequencies(
        h_dims, theta
    ).to(device)
    w_angles = torch.arange(width, dtype=torch.float64, device=device)[:, None] * _inverse_frequencies(
        w_dims, theta
    ).to(device)
    angles = torch.cat(
        [
            t_angles[:, None, None, :].expand(frames, height, width, -1),
            h_angles[None, :, None, :].expand(frames, height, width, -1),
            w_angles[None, None, :, :].expand(frames, height, width, -1),
        ],
        dim=-1,
    ).reshape(frames * height * width, 1, head_dim // 2)
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last dim of x [..., tokens, heads, head_dim]."""
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention on [batch, tokens, heads, head_dim] tensors."""
    out = F.scaled_dot_product_attention(q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2))
    return out.transpose(-3, -2)


# ---------------------------------------------------------------------------- layers


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, layer_index: int, attend: AttendFn) -> torch.Tensor:
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(-1, heads)
        k = self.norm_k(self.k(x)).unflatten(-1, heads)
        v = self.v(x).unflatten(-1, heads)
        return self.o(attend(layer_index, q, k, v).flatten(-2))


class CrossAttention(nn.Module):
    """Attention from video tokens to the prompt; the prompt's K/V are computed once."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(context)).unflatten(-1, heads), self.v(context).unflatten(-1, heads)

    def forward(self, x: torch.Tensor, context_k: torch.Tensor, context_v: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        return self.o(attention(q, context_k, context_v).flatten(-2))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps)
        self.norm1 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        t_mod: torch.Tensor,
        context_k: torch.Tensor,
        context_v: torch.Tensor,
        layer_index: int,
        attend: AttendFn,
    ) -> torch.Tensor:
        # x: [N, frames * tokens_per_frame, dim]; t_mod: [N, frames, 6, dim] (one set per frame).
        frames = t_mod.shape[1]
        per_frame = (frames, x.shape[1] // frames)
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (self.modulation[:, None] + t_mod).chunk(6, dim=2)

        h = (self.norm1(x).unflatten(1, per_frame) * (1 + scale_sa) + shift_sa).flatten(1, 2)
        h = self.self_attn(h, layer_index, attend)
        x = x + (h.unflatten(1, per_frame) * gate_sa).flatten(1, 2)

        x = x + self.cross_attn(self.norm3(x), context_k, context_v)

        h = (self.norm2(x).unflatten(1, per_frame) * (1 + scale_ff) + shift_ff).flatten(1, 2)
        h = self.ffn(h)
        return x + (h.unflatten(1, per_frame) * gate_ff).flatten(1, 2)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        # t_emb: [N, frames, dim] -> one shift/scale per frame.
        frames = t_emb.shape[1]
        shift, scale = (self.modulation[:, None] + t_emb[:, :, None]).chunk(2, dim=2)
        h = self.norm(x).unflatten(1, (frames, -1)) * (1 + scale) + shift
        return self.head(h).flatten(1, 2)


class AudioPack(nn.Module):
    """Folds the wav2vec2 features of a latent frame's video frames into one small vector."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.audio_feature_dim * cfg.audio_frames_per_latent, cfg.audio_hidden_dim)
        self.norm_out = nn.LayerNorm(cfg.audio_hidden_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: [N, latent_frames, video_frames_per_latent, feature_dim], frame-major.
        return self.norm_out(self.proj(features.flatten(-2)))


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class PromptConditioning:
    """A prompt's cross-attention K/V for every layer: [layers, sessions, tokens, heads, head_dim]."""

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @classmethod
    def stack(cls, prompts: Sequence[PromptConditioning]) -> PromptConditioning:
        if len(prompts) == 1:
            return prompts[0]
        return cls(torch.cat([p.keys for p in prompts], dim=1), torch.cat([p.values for p in prompts], dim=1))


class LiveTalkDiT(nn.Module):
    def __init__(self, cfg: DiTConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or DiTConfig()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.audio_proj = AudioPack(cfg)
        self.audio_cond_projs = nn.ModuleList(nn.Linear(cfg.audio_hidden_dim, dim) for _ in cfg.audio_layers)
        #: Training only: recompute each block in the backward pass instead of keeping its
        #: activations. Needs an `attend` that reads the same inputs again when recomputed
        #: (full or teacher-forced attention; not a KV cache that has moved on).
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def encode_prompt(self, text_embeds: torch.Tensor) -> PromptConditioning:
        """Cross-attention K/V of a pre-encoded prompt [tokens <= text_len, text_dim], for one session."""
        cfg = self.cfg
        if text_embeds.ndim != 2 or text_embeds.shape[1] != cfg.text_dim:
            raise ValueError(f"prompt embeddings must be [tokens, {cfg.text_dim}], got {tuple(text_embeds.shape)}")
        if text_embeds.shape[0] > cfg.text_len:
            raise ValueError(f"prompt has {text_embeds.shape[0]} tokens; at most {cfg.text_len} are supported")
        # The text encoder pads with zeros to text_len and the model attends to the padding too.
        padded = text_embeds.new_zeros(cfg.text_len, cfg.text_dim)
        padded[: text_embeds.shape[0]] = text_embeds
        context = self.text_embedding(padded.to(device=self.device, dtype=self.dtype))[None]
        kv = [cast(DiTBlock, block).cross_attn.project_context(context) for block in self.blocks]
        return PromptConditioning(torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv]))

    def pack_audio(self, features: torch.Tensor) -> torch.Tensor:
        """[N, latent_frames, 4, audio_feature_dim] wav2vec2 features -> [N, latent_frames, audio_hidden_dim]."""
        return self.audio_proj(features.to(device=self.device, dtype=self.dtype))

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        reference: torch.Tensor,
        prompt: PromptConditioning,
        audio: torch.Tensor,
        attend: AttendFn,
    ) -> torch.Tensor:
        """Predict the flow (noise - clean) for latents [N, 16, frames, H, W].

        timesteps: [N, frames] in [0, 1000]. reference: [N, 17, frames, H, W], the reference
        latent and the first-frame mask. audio: [N, frames, audio_hidden_dim] from `pack_audio`.
        """
        cfg = self.cfg
        n, _, frames, height, width = latents.shape
        x = self.patch_embedding(torch.cat([latents, reference], dim=1).to(self.dtype))
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [N, frames * grid_h * grid_w, dim], (f, h, w) order

        t_emb = self.time_embedding(sinusoidal_embedding(cfg.freq_dim, timesteps.flatten()).to(self.dtype))
        t_emb = t_emb.unflatten(0, (n, frames))
        t_mod = self.time_projection(t_emb).unflatten(-1, (6, cfg.dim))

        audio = audio.to(self.dtype)
        first_audio_layer = cfg.audio_layers[0] if cfg.audio_layers else cfg.num_layers
        for index, block in enumerate(self.blocks):
            if index in cfg.audio_layers:
                injected = self.audio_cond_projs[index - first_audio_layer](audio)  # [N, frames, dim]
                x = (x.unflatten(1, (frames, -1)) + injected[:, :, None]).flatten(1, 2)
            args = (x, t_mod, prompt.keys[index], prompt.values[index], index, attend)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)

        x = self.head(x, t_emb)
        pt, ph, pw = cfg.patch_size
        x = x.view(n, frames, grid_h, grid_w, pt, ph, pw, cfg.out_dim)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(n, cfg.out_dim, frames * pt, height, width)


def parameter_shapes(cfg: DiTConfig | None = None) -> dict[str, list[int]]:
    """Parameter names and shapes of the DiT, built on the meta device (no memory used)."""
    with torch.device("meta"):
        model = LiveTalkDiT(cfg)
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avatar_node.engines.livetalk.model",
        description="Inspect the LiveTalk causal DiT without allocating its weights.",
    )
    parser.add_argument("--keys", action="store_true", help="print parameter names and shapes as JSON")
    parser.add_argument("--tiny", action="store_true", help="use the tiny test configuration")
    args = parser.parse_args(argv)
    cfg = DiTConfig.tiny() if args.tiny else DiTConfig()
    shapes = parameter_shapes(cfg)
    if args.keys:
        # One parameter per line keeps the output greppable and still valid JSON.
        lines = [f"  {json.dumps(name)}: {json.dumps(shape)}" for name, shape in shapes.items()]
        sys.stdout.write("{\n" + ",\n".join(lines) + "\n}\n")
    else:
        total = sum(math.prod(s) for s in shapes.values())
        print(f"{len(shapes)} tensors, {total / 1e9:.3f} B parameters; use --keys for the list")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
