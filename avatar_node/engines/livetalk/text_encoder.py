"""The umT5 text encoder Wan2.1 uses, for pre-encoding prompts (`avatar-node encode-prompts`).

The module tree mirrors Wan2.1's ``models_t5_umt5-xxl-enc-bf16.pth`` so it loads strictly
by the checkpoint's names: ``token_embedding``, ``blocks.N.{norm1, attn.{q,k,v,o}, norm2,
ffn.{gate.0, fc1, fc2}, pos_embedding.embedding}``, ``norm``. Facts from the public Wan2.1
code, restated: T5 RMS norms (no mean, no bias), unscaled attention with a learned
relative-position bias per layer (32 buckets, bidirectional, max distance 128), a gated
tanh-GELU feed-forward, padding masked in attention. Prompts are cleaned (HTML entities
undone, whitespace collapsed), tokenised to 512 tokens with the end token, and the
encoder output is kept for the real tokens only; the DiT zero-pads it back to 512.

It needs the ~11 GB encoder only while prompts are being encoded; the engine itself
reads the cached embeddings (prompts.py).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextEncoderConfig


class T5Norm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x.to(self.weight.dtype)


class RelativePositionBias(nn.Module):
    def __init__(self, num_buckets: int, num_heads: int, max_distance: int = 128) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int) -> torch.Tensor:
        """Bias [1, heads, length, length] for a bidirectional encoder."""
        device = self.embedding.weight.device
        relative = torch.arange(length, device=device)[None] - torch.arange(length, device=device)[:, None]
        half = self.num_buckets // 2
        buckets = (relative > 0).long() * half
        distance = relative.abs()
        exact = half // 2
        far = (
            exact
            + (
                torch.log(distance.float().clamp_min(1) / exact) / math.log(self.max_distance / exact) * (half - exact)
            ).long()
        )
        far = far.clamp_max(half - 1)
        buckets = buckets + torch.where(distance < exact, distance, far)
        return self.embedding(buckets).permute(2, 0, 1)[None]


class T5Attention(nn.Module):
    def __init__(self, dim: int, dim_attn: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim_attn // num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = (
            proj(x).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v)
        )
        # T5 attention is not scaled by 1/sqrt(head_dim).
        scores = torch.einsum("bnid,bnjd->bnij", q, k) + bias
        weights = F.softmax(scores.float(), dim=-1).type_as(scores)
        out = torch.einsum("bnij,bnjd->bnid", weights, v)
        return self.o(out.transpose(1, 2).flatten(2))


class GatedFeedForward(nn.Module):
    def __init__(self, dim: int, dim_ffn: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class T5Block(nn.Module):
    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.norm1 = T5Norm(cfg.dim)
        self.attn = T5Attention(cfg.dim, cfg.dim_attn, cfg.num_heads)
        self.norm2 = T5Norm(cfg.dim)
        self.ffn = GatedFeedForward(cfg.dim, cfg.dim_ffn)
        self.pos_embedding = RelativePositionBias(cfg.num_buckets, cfg.num_heads)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        bias = self.pos_embedding(x.shape[1]).to(x.dtype) + mask_bias
        x = _clamp_fp16(x + self.attn(self.norm1(x), bias))
        return _clamp_fp16(x + self.ffn(self.norm2(x)))


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float16:
        limit = torch.finfo(torch.float16).max - 1000
        return x.clamp(-limit, limit)
    return x


class UMT5Encoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or TextEncoderConfig()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(T5Block(cfg) for _ in range(cfg.num_layers))
        self.norm = T5Norm(cfg.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: [B, L] -> hidden states [B, L, dim] (padding rows are not meaningful)."""
        x = self.token_embedding(ids)
        mask_bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(
            mask == 0, torch.finfo(x.dtype).min
        )
        mask_bias = mask_bias[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask_bias)
        return self.norm(x)


def clean_prompt(text: str) -> str:
    """HTML entities undone (twice, as released) and whitespace collapsed."""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def text_encoder_parameter_shapes(cfg: TextEncoderConfig | None = None) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = UMT5Encoder(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


class PromptEncoder:
    """Tokeniser + umT5 encoder, loaded only to encode prompts, then dropped."""

    def __init__(
        self,
        checkpoint: Path | str,
        tokenizer_dir: Path | str,
        cfg: TextEncoderConfig | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from transformers import AutoTokenizer

        from .checkpoints import load_checkpoint

        self.cfg = cfg or TextEncoderConfig()
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        state = load_checkpoint(Path(checkpoint))
        with torch.device("meta"):
            model = UMT5Encoder(self.cfg)
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Each prompt -> [real tokens, dim] float32 (no padding rows)."""
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=self.cfg.text_len,
            add_special_tokens=True,
            return_tensors="pt",
        )
        ids = batch.input_ids.to(self.device)
        mask = batch.attention_mask.to(self.device)
        hidden = self.model(ids, mask)
        lengths = mask.sum(dim=1).tolist()
        return [h[:n].float().cpu() for h, n in zip(hidden, lengths)]
