"""OmniAvatar teachers as one state dict in the node's key layout.

OmniAvatar ships its DiT as a Wan2.1 base (``diffusion_pytorch_model*.safetensors``, the
node's key names) plus ``pytorch_model.pt``: LoRA pairs on every ``q, k, v, o, ffn.0, ffn.2``
(PEFT names, ``<module>.lora_A.default.weight`` / ``lora_B``), the audio modules, and the
33-channel ``patch_embedding`` that replaces the base's 16-channel one. Merging folds each
pair into its base weight, W + (alpha / rank) * B @ A (PEFT's scaling), and takes every other
tensor of the OmniAvatar file as it is. The result is checked by name and shape against the
DiT built from the config (1.3B or 14B), then written as one safetensors file that
`teacher.load_teacher` (and stage 1's `--init`, for the merged 1.3B) reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch

from avatar_node.engines.livetalk.checkpoints import load_checkpoint
from avatar_node.engines.livetalk.config import DiTConfig
from avatar_node.engines.livetalk.model import parameter_shapes

_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.default)?\.weight$")


def _load_any(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_checkpoint(path)


def merge_lora(
    base: dict[str, torch.Tensor], update: dict[str, torch.Tensor], rank: int, alpha: float
) -> dict[str, torch.Tensor]:
    """Fold `update`'s LoRA pairs into `base` and overlay its other tensors (a new dict)."""
    merged = dict(base)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in update.items():
        match = _LORA.match(name)
        if match:
            pairs.setdefault(match["module"], {})[match["side"]] = tensor
        else:
            merged[name] = tensor
    scale = alpha / rank
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise ValueError(f"LoRA for {module} has only lora_{''.join(pair)}; both A and B are needed")
        target = f"{module}.weight"
        if target not in merged:
            raise ValueError(f"LoRA for {module}, but the base has no {target}")
        a, b = pair["A"].float(), pair["B"].float()
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ValueError(f"LoRA for {module} has rank {a.shape[0]}, the config says {rank}")
        weight = merged[target]
        merged[target] = (weight.float() + scale * (b @ a)).to(weight.dtype)
    return merged


def merge_omniavatar(
    base_files: Iterable[Path], omni_file: Path, cfg: DiTConfig, *, rank: int = 128, alpha: float = 64.0
) -> dict[str, torch.Tensor]:
    """The merged teacher's state dict; ValueError naming every missing or mis-shaped tensor."""
    base: dict[str, torch.Tensor] = {}
    for path in base_files:
        base.update(_load_any(Path(path)))
    if not base:
        raise ValueError("no base weights given (the Wan2.1 diffusion_pytorch_model*.safetensors files)")
    merged = merge_lora(base, _load_any(Path(omni_file)), rank, alpha)
    expected = parameter_shapes(cfg)
    missing = sorted(set(expected) - set(merged))
    unexpected = sorted(set(merged) - set(expected))
    wrong = [
        f"{k} is {list(merged[k].shape)}, expected {v}"
        for k, v in expected.items()
        if k in merged and list(merged[k].shape) != v
    ]
    if missing or wrong:
        lines = [f"missing: {k}" for k in missing] + [f"wrong shape: {w}" for w in wrong]
        raise ValueError("the merged teacher does not match the DiT config:\n  " + "\n  ".join(lines[:20]))
    # Base tensors the DiT does not have (e.g. an image encoder's) are dropped, by name.
    return {k: v.contiguous() for k, v in merged.items() if k not in unexpected}
