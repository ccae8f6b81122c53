"""One session's self-attention KV cache: identity sinks plus a rolling window, bounded.

Per layer the cache holds the K/V of at most `window_frames - frames_per_block` committed
latent frames: the first `sink_frames` frames the session generated, which are never
evicted, and the most recent frames after them. A block being denoised attends to those
plus its own frames; only the clean t=0 pass of a block commits its K/V (`commit=True`),
after which `finish_block` evicts the oldest non-sink frames. Memory is fixed at
construction: one key and one value buffer of `window_frames` frames per layer.

Keys are stored once, already rotated (RoPE) to the positions of the current layout.
When the layout moves on (window positions: the recent frames slide towards the sinks),
each held frame's keys are turned by the difference of its positions, in place, when a
layer first needs them in the new block. RoPE is a rotation, so turning by a difference
equals rotating the raw key to the new position; a frame is turned at most
ceil((cached - sinks) / frames_per_block) times before it is evicted (once with the
release's settings), so rounding cannot build up over a long session. Sinks never move.

A block's frame numbers come from the caller (`start_block`): they follow the session's
timeline, which may jump forward when a live session skips frames. Frame numbers only
order the frames; which positions a block sees is decided by window.py's rule.
"""

from __future__ import annotations

import torch

from .config import DiTConfig, StreamConfig
from .model import apply_rope, attention, rope_axis_dims, rope_cos_sin


def _temporal_cos_sin(
    delta: torch.Tensor, tokens_per_frame: int, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin turning only the temporal RoPE dims by `delta` positions per frame:
    [frames * tokens_per_frame, 1, temporal_dims / 2]."""
    t_dims = rope_axis_dims(head_dim)[0]
    inv = 1.0 / theta ** (torch.arange(0, t_dims, 2, dtype=torch.float64, device=delta.device) / t_dims)
    angles = delta.to(torch.float64)[:, None] * inv[None]
    angles = angles.repeat_interleave(tokens_per_frame, dim=0)[:, None]
    return torch.cos(angles).float(), torch.sin(angles).float()


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
        visible = stream.window_frames * self.tokens_per_frame
        shape = (dit.num_layers, visible, dit.num_heads, dit.head_dim)
        # Committed frames (rotated keys) in slots [0, held), the current block after them.
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        #: Frame numbers held, in slot order (sinks first).
        self.frames: list[int] = []
        #: The temporal position each held frame's keys are rotated to now.
        self.rotated_to: list[int] = []
        self.blocks_done = 0
        #: First frame number of the next block.
        self.next_frame = 0
        self._block_frames: list[int] = list(range(stream.frames_per_block))
        self._version = 0
        self._turned_version = [-1] * dit.num_layers
        self._tables_version = -1
        self._tables: tuple[torch.Tensor, ...] = ()
        self._needs_turn = False
        self._pending: tuple[list[int], list[int]] | None = None
        self._gather_index: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values))

    def start_block(self, first_frame: int) -> None:
        """Number the next block's frames from `first_frame` (>= the end of the previous block)."""
        if first_frame < self.next_frame:
            raise ValueError(
                f"block starts at frame {first_frame}, before the end of the previous one ({self.next_frame})"
            )
        if self._pending is not None:
            raise RuntimeError("start_block() during a block; call finish_block() first")
        if first_frame != self._block_frames[0]:
            self._block_frames = list(range(first_frame, first_frame + self.stream.frames_per_block))
            self._version += 1

    def positions(self) -> tuple[list[int], list[int]]:
        """Temporal RoPE positions of the held frames and of the next block's frames."""
        if self.stream.positions == "absolute":
            return list(self.frames), list(self._block_frames)
        held = len(self.frames)
        return list(range(held)), list(range(held, held + self.stream.frames_per_block))

    def _layout(self) -> tuple[torch.Tensor, ...]:
        """(turn cos, turn sin) for the held keys, (cos, sin) for the block; once per block."""
        if self._tables_version != self._version:
            held_positions, block_positions = self.positions()
            device = self.keys.device
            delta = torch.tensor(
                [new - old for new, old in zip(held_positions, self.rotated_to)], device=device, dtype=torch.long
            )
            turn = _temporal_cos_sin(delta, self.tokens_per_frame, self.dit.head_dim, self.dit.rope_theta)
            h, w = self.grid
            block = rope_cos_sin(
                torch.tensor(block_positions, device=device), h, w, self.dit.head_dim, self.dit.rope_theta
            )
            self._tables = (*turn, *block)
            self._needs_turn = bool(delta.any())
            self._tables_version = self._version
        return self._tables

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, commit: bool) -> torch.Tensor:
        """Attention of the current block's q [tokens, heads, head_dim] over the window.

        k and v are the block's own, not yet rotated. With `commit`, the block's K/V
        replace the oldest non-sink frames of this layer; call `finish_block` once every
        layer has committed.
        """
        block_tokens = self.stream.frames_per_block * self.tokens_per_frame
        if q.shape[0] != block_tokens:
            raise ValueError(f"a block has {block_tokens} tokens, got {q.shape[0]}")
        held = len(self.frames) * self.tokens_per_frame
        end = held + block_tokens
        turn_cos, turn_sin, block_cos, block_sin = self._layout()
        if self._turned_version[layer] != self._version:
            if self._needs_turn:
                t_dims = rope_axis_dims(self.dit.head_dim)[0]
                part = self.keys[layer, :held, :, :t_dims]
                part.copy_(apply_rope(part, turn_cos, turn_sin))
            self._turned_version[layer] = self._version
        rotated = apply_rope(k, block_cos, block_sin)
        self.keys[layer, held:end] = rotated.detach()
        self.values[layer, held:end] = v.detach()
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad or q.requires_grad):
            # A training rollout's graph must not run through the buffers the next passes
            # overwrite in place: attend over a copy; the cached context stays detached.
            keys = torch.cat([self.keys[layer, :held], rotated])
            values = torch.cat([self.values[layer, :held], v])
        else:
            keys, values = self.keys[layer, :end], self.values[layer, :end]
        out = attention(apply_rope(q, block_cos, block_sin)[None], keys[None], values[None])[0]
        if commit:
            index = self._plan_commit()
            keep = index.numel()
            self.keys[layer, :keep] = self.keys[layer, :end].index_select(0, index)
            self.values[layer, :keep] = self.values[layer, :end].index_select(0, index)
        return out

    def _plan_commit(self) -> torch.Tensor:
        """Token indices (into held + block tokens) that survive the commit; once per block."""
        if self._gather_index is None:
            held_positions, block_positions = self.positions()
            candidates = self.frames + self._block_frames
            candidate_positions = held_positions + block_positions
            sinks = self.stream.sink_frames
            recent_room = self.stream.cached_frames - min(sinks, len(candidates))
            # Candidates are in generation order, and sinks are the first frames generated.
            slots = list(range(min(sinks, len(candidates))))
            later = list(range(len(slots), len(candidates)))
            slots += later[len(later) - recent_room :] if recent_room > 0 else []
            self._pending = ([candidates[s] for s in slots], [candidate_positions[s] for s in slots])
            tokens = torch.tensor(slots, dtype=torch.long)[:, None] * self.tokens_per_frame + torch.arange(
                self.tokens_per_frame
            )
            self._gather_index = tokens.flatten().to(self.keys.device)
        return self._gather_index

    def finish_block(self) -> None:
        """Close the block whose K/V every layer has just committed."""
        if self._pending is None:
            raise RuntimeError("finish_block() needs a commit pass first (attend(..., commit=True))")
        self.frames, self.rotated_to = self._pending
        self._pending = None
        self._gather_index = None
        self.blocks_done += 1
        self.next_frame = self._block_frames[-1] + 1
        self._block_frames = list(range(self.next_frame, self.next_frame + self.stream.frames_per_block))
        self._version += 1
