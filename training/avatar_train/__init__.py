"""The LiveTalk distillation recipe, runnable: data -> teacher trajectories -> stage 1 (ODE
regression) -> stage 2 (DMD with Self-Forcing rollouts) -> a weights directory the livetalk
engine serves unchanged.

It trains the node's own network (`avatar_node.engines.livetalk.model`) and rolls it out with
the node's own sampler; the node never imports this package. Install with the `[train]` extra.
"""
