"""Engines by name, imported only when asked for (the GPU engine needs torch)."""

from __future__ import annotations

import importlib
from typing import Callable

from .base import Engine

_FACTORIES: dict[str, tuple[str, str]] = {
    "portrait": ("avatar_node.engines.portrait", "PortraitEngine"),
}

DEFAULT_ENGINE = "portrait"


def available() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str) -> Engine:
    try:
        module_name, attr = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(available())}") from None
    factory: Callable[[], Engine] = getattr(importlib.import_module(module_name), attr)
    return factory()
