"""Engines by name, imported only when asked for (the GPU engine needs torch)."""

from __future__ import annotations

import importlib
from typing import Callable

from .base import Engine

_FACTORIES: dict[str, tuple[str, str]] = {
    "portrait": ("avatar_node.engines.portrait", "PortraitEngine"),
    "livetalk": ("avatar_node.engines.livetalk.engine", "LiveTalkEngine"),
}

#: Engines whose factory takes a weights directory (`weights_dir`).
NEEDS_WEIGHTS = frozenset({"livetalk"})

DEFAULT_ENGINE = "portrait"


def available() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str, **options: object) -> Engine:
    try:
        module_name, attr = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(available())}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"engine {name!r} cannot be loaded ({exc}); for livetalk install the extra: "
                         "pip install 'avatar-node[diffusion]'") from None
    factory: Callable[..., Engine] = getattr(module, attr)
    return factory(**options)
