"""One session's self-attention KV cache: identity sinks plus a rolling window, bounded.

Per layer the cache holds the K/V of at most `window_frames - frames_per_block` committed
latent frames: the first `sink_frames` frames of the session, which are never evicted,
and the most recent frames after them. A block being denoised attends to those plus its
own frames; only the clean t=0 pass of a block commits its K/V (`commit=True`), after
which `finish_block` evicts the oldest non-sink frames. Memory is fixed at construction.

Keys are stored before the temporal rotation ("raw") and rotated to the positions of the
current layout when a layer first needs them after the layout changed, once per block. So
whatever position scheme is used (window.py), the cached keys are always rotated to
exactly the positions the current block assumes; nothing accumulates over hours. The
rotated copy is reused by the 4 denoising passes and the commit pass of a block.
"""

from __future__ import annotations

import torch

from .config import DiTConfig, StreamConfig
from .model import apply_rope, attention, rope_cos_sin


class SessionKVCache:
    def __init__(
        self,
        dit: DiTConfig,
        stream: StreamConfig,
        grid: tuple[int, int],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.dit = dit
        self.stream = stream
        self.grid = grid
        self.tokens_per_frame = grid[0] * grid[1]
        shape = (dit.num_layers, 0, dit.num_heads, dit.head_dim)
        committed = stream.cached_frames * self.tokens_per_frame
        visible = stream.window_frames * self.tokens_per_frame
        self.raw_keys = torch.zeros(shape[:1] + (committed,) + shape[2:], device=device, dtype=dtype)
        # Rotated committed keys followed by the current block's keys; values likewise.
        self.keys = torch.zeros(shape[:1] + (visible,) + shape[2:], device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        #: Absolute frame numbers held, in slot order (sinks first).
        self.frames: list[int] = []
        self.blocks_done = 0
        self._version = 0
        self._rotated_version = [-1] * dit.num_layers
        self._rope_version = -1
        self._rope: tuple[torch.Tensor, ...] = ()
        self._pending_frames: list[int] | None = None
        self._gather_index: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.raw_keys, self.keys, self.values))

    @property
    def next_frame(self) -> int:
        return self.blocks_done * self.stream.frames_per_block

    def positions(self) -> tuple[list[int], list[int]]:
        """Temporal RoPE positions of the held frames and of the next block's frames."""
        per_block = self.stream.frames_per_block
        if self.stream.positions == "absolute":
            return list(self.frames), list(range(self.next_frame, self.next_frame + per_block))
        held = len(self.frames)
        return list(range(held)), list(range(held, held + per_block))

    def _rope_tables(self) -> tuple[torch.Tensor, ...]:
        if self._rope_version != self._version:
            held_positions, block_positions = self.positions()
            device = self.keys.device
            h, w = self.grid
            context = rope_cos_sin(torch.tensor(held_positions, device=device), h, w, self.dit.head_dim, self.dit.rope_theta)
            block = rope_cos_sin(torch.tensor(block_positions, device=device), h, w, self.dit.head_dim, self.dit.rope_theta)
            self._rope = (*context, *block)
            self._rope_version = self._version
        return self._rope

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, commit: bool) -> torch.Tensor:
        """Attention of the current block's q [tokens, heads, head_dim] over the window.

        With `commit`, the block's raw k and v replace the oldest non-sink frames of this
        layer; call `finish_block` once every layer has committed.
        """
        block_tokens = self.stream.frames_per_block * self.tokens_per_frame
        if q.shape[0] != block_tokens:
            raise ValueError(f"a block has {block_tokens} tokens, got {q.shape[0]}")
        held = len(self.frames) * self.tokens_per_frame
        end = held + block_tokens
        context_cos, context_sin, block_cos, block_sin = self._rope_tables()
        if self._rotated_version[layer] != self._version:
            self.keys[layer, :held] = apply_rope(self.raw_keys[layer, :held], context_cos, context_sin)
            self._rotated_version[layer] = self._version
        self.keys[layer, held:end] = apply_rope(k, block_cos, block_sin)
        self.values[layer, held:end] = v
        out = attention(apply_rope(q, block_cos, block_sin)[None], self.keys[None, layer, :end], self.values[None, layer, :end])[0]
        if commit:
            self._commit(layer, k, held, end)
        return out

    def _commit(self, layer: int, k: torch.Tensor, held: int, end: int) -> None:
        index = self._plan_commit()
        keep = index.numel()
        raw = torch.cat([self.raw_keys[layer, :held], k])
        self.raw_keys[layer, :keep] = raw.index_select(0, index)
        self.values[layer, :keep] = self.values[layer, :end].index_select(0, index)

    def _plan_commit(self) -> torch.Tensor:
        """Token indices (into held + block tokens) that survive the commit; computed once per block."""
        if self._gather_index is None:
            per_block = self.stream.frames_per_block
            candidates = self.frames + list(range(self.next_frame, self.next_frame + per_block))
            sinks = [f for f in candidates if f < self.stream.sink_frames]
            recent_room = self.stream.cached_frames - len(sinks)
            recent = [f for f in candidates if f >= self.stream.sink_frames]
            recent = recent[len(recent) - recent_room :] if recent_room > 0 else []
            kept = sinks + recent
            slots = torch.tensor([candidates.index(f) for f in kept], dtype=torch.long)
            tokens = slots[:, None] * self.tokens_per_frame + torch.arange(self.tokens_per_frame)
            self._pending_frames = kept
            self._gather_index = tokens.flatten().to(self.keys.device)
        return self._gather_index

    def finish_block(self) -> None:
        """Close the block whose K/V every layer has just committed."""
        if self._pending_frames is None:
            raise RuntimeError("finish_block() needs a commit pass first (attend(..., commit=True))")
        self.frames = self._pending_frames
        self._pending_frames = None
        self._gather_index = None
        self.blocks_done += 1
        self._version += 1
