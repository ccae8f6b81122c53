"""Engines by name: the built-in ones, and any a separate package adds.

A package adds an engine with one entry point in its pyproject.toml, no change here:

    [project.entry-points."avatar_node.engines"]
    myengine = "my_package.engine:MyEngine"

The factory is called with the keyword options it declares among those the node
has (today `weights_dir` and `vae`). Engines are imported only when asked for (the GPU engine
needs torch).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .base import Engine

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "avatar_node.engines"
DEFAULT_ENGINE = "portrait"
_BUILT_IN = {
    "portrait": "avatar_node.engines.portrait:PortraitEngine",
    "testcard": "avatar_node.engines.testcard:TestCardEngine",
    "livetalk": "avatar_node.engines.livetalk.engine:LiveTalkEngine",
}
#: Engines whose factory needs a weights directory (`weights_dir`).
NEEDS_WEIGHTS = frozenset({"livetalk"})


def _targets() -> dict[str, str]:
    targets = dict(_BUILT_IN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILT_IN:
            log.warning("engine %r from %s ignored: a built-in engine has that name", ep.name, ep.value)
            continue
        targets[ep.name] = ep.value
    return targets


def available() -> list[str]:
    return sorted(_targets())


def _load(name: str, target: str) -> Callable[..., Engine]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install its extra: pip install 'avatar-node[diffusion]')" if name == "livetalk" else ""
        raise ValueError(f"engine {name!r} cannot be loaded: {exc}{hint}") from None
    factory: Callable[..., Engine] = getattr(module, attr)
    return factory


def create(name: str, **options: Any) -> Engine:
    """Make the engine called `name`. Options the factory does not take (or None) are left out."""
    targets = _targets()
    if name not in targets:
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(sorted(targets))}")
    factory = _load(name, targets[name])
    params = inspect.signature(factory).parameters
    wanted = {k: v for k, v in options.items() if v is not None and k in params}
    missing = [k for k, v in options.items() if v is not None and k not in params]
    if missing:
        log.debug("engine %r takes no %s; ignored", name, ", ".join(missing))
    return factory(**wanted)
