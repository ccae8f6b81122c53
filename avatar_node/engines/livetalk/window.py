"""Which earlier latent frames a block attends to, and at which RoPE positions.

A block of `frames_per_block` latent frames attends to itself, to the session's first
`sink_frames` frames (the identity sinks; frame 0 is the reference image) and to the most
recent other frames, `window_frames` frames in all. This is the release's rule; the
functions here state it in closed form. The streaming cache (cache.py) reaches the same
layout by bookkeeping, and the tests check that the two agree.

Positions. The release rotates keys by their absolute frame number, and its RoPE table
ends at 1024 latent frames (about 256 s). With `positions="window"` a frame's temporal
position is instead its slot in what the block sees: sinks first at 0 .. S-1, then the
recent frames, then the block itself. Until the window first fills (block 4 with the
release's settings) that is identical to absolute numbering; after it, every block sees
exactly the layout block 4 saw: the distance between a block and its recent frames is the
true one, and the sinks stay just before the recent frames instead of drifting away.
Positions then never exceed `window_frames - 1`, so sessions run indefinitely.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import StreamConfig


@dataclass(frozen=True)
class BlockView:
    """What block `block_index` sees: earlier frames and the temporal positions used."""

    block_index: int
    #: Absolute numbers of the earlier frames attended to, oldest first (sinks first).
    context_frames: tuple[int, ...]
    context_positions: tuple[int, ...]
    #: Positions of the block's own frames.
    block_positions: tuple[int, ...]


def block_view(cfg: StreamConfig, block_index: int) -> BlockView:
    """The attention layout of one block, from the block index alone."""
    per_block = cfg.frames_per_block
    start = block_index * per_block
    end = start + per_block
    recent_from = end - (cfg.window_frames - cfg.sink_frames)
    context = tuple(f for f in range(start) if f < cfg.sink_frames or f >= recent_from)
    if cfg.positions == "absolute":
        return BlockView(block_index, context, context, tuple(range(start, end)))
    slots = len(context)
    return BlockView(block_index, context, tuple(range(slots)), tuple(range(slots, slots + per_block)))
