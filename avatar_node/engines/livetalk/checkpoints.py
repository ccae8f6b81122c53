"""Checkpoint files read without knowing what they hold: a safetensors header, a torch
checkpoint's names and shapes (memory-mapped on the meta device) or its tensors.

The bottom of the package: the model, VAE and text-encoder loaders import it, and it
imports none of them (directory checks live above, in weights.py).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes in a safetensors file, from its header alone."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size, 100_000_000):
            raise ValueError(f"{path} is not a safetensors file (header length {length})")
        header = json.loads(f.read(length))
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["data_offsets"][1] > data_size:
            raise ValueError(f"{path} is truncated ({name} ends past the end of the file); download it again")
        tensors[name] = TensorInfo(tuple(entry["shape"]), entry["dtype"])
    return tensors


def _torch_load(path: Path, map_location: str) -> object:
    try:
        return torch.load(path, map_location=map_location, mmap=True, weights_only=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        return torch.load(path, map_location=map_location, weights_only=True)


def read_torch_checkpoint(path: Path) -> dict[str, TensorInfo]:
    """Names and shapes in a torch checkpoint, memory-mapped on the meta device."""
    state = unwrap_state_dict(_torch_load(path, "meta"))
    return {
        k: TensorInfo(tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A torch checkpoint's tensors on the CPU (memory-mapped where the format allows)."""
    state = unwrap_state_dict(_torch_load(path, "cpu"))
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def unwrap_state_dict(state: object) -> Mapping[str, object]:
    """Training checkpoints nest the weights under one of these keys."""
    if not isinstance(state, Mapping):
        raise ValueError("the checkpoint does not hold a state dict")
    for key in ("generator_ema", "generator", "state_dict", "model"):
        if isinstance(state.get(key), Mapping):
            return state[key]  # type: ignore[return-value]
    return state
