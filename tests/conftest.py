"""Fixtures more than one test folder uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support.media import sample_photo

#: The livetalk engine's only rate; every client must work against it without being told.
LIVETALK_FPS = 16


@pytest.fixture(scope="session")
def photo() -> bytes:
    """The portrait that ships with the node (a folder may define its own)."""
    return sample_photo()


@pytest.fixture(scope="session")
def livetalk_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight livetalk weights directory (needs the [diffusion] extra)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from avatar_node.engines.livetalk.tiny import make_tiny_weights

    return make_tiny_weights(tmp_path_factory.mktemp("tiny-livetalk"))


@pytest.fixture(scope="session")
def livetalk_node(livetalk_weights: Path) -> Iterator[Any]:
    """A node on loopback serving only the livetalk engine (tiny weights, CPU), with its web page."""
    from avatar_node.server import NodeConfig, start_background_node

    web: dict[str, Any] = {}
    try:
        import aiortc  # noqa: F401

        web = dict(web_port=0)
    except ImportError:  # the [web] extra is missing: the page's own tests skip
        pass
    node = start_background_node(
        NodeConfig(
            host="127.0.0.1", port=0, engines=["livetalk"], weights_dir=str(livetalk_weights),
            max_sessions=4, auth_token=None, **web,
        )
    )
    try:
        yield node
    finally:
        node.stop()
