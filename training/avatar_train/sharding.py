"""The frozen teacher sharded across processes (FSDP, `fully_shard`), for a 14B teacher that
one device cannot hold beside the student and the critic.

Every module that owns parameters and has no children (the linears, convolutions and norms)
becomes its own FSDP unit: its weights live sharded and are gathered for its forward only.
Units this small are needed because the DiT is called through more than `forward`
(`encode_prompt`, `pack_audio`, the cross-attention's `project_context`); the few parameters
held by modules with children (each block's and the head's modulation) stay whole. Every
process must run the teacher the same number of times per step, which the trainer does.
The teacher is loaded whole on each process first, then sharded.
"""

from __future__ import annotations

from torch import nn


def shard_frozen(model: nn.Module, world: int) -> nn.Module:
    """Shard `model`'s leaf parameters over the `world` processes of the default group."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (world,))
    for module in list(model.modules()):
        owns = any(True for _ in module.parameters(recurse=False))
        if owns and not any(True for _ in module.children()):
            fully_shard(module, mesh=mesh)
    return model


def sharded_parameters(model: nn.Module) -> int:
    """How many of the model's parameters are held sharded (DTensors)."""
    from torch.distributed.tensor import DTensor

    return sum(isinstance(p, DTensor) for p in model.parameters())
