"""One tiny training world per test run (helpers.World)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from tests.train.helpers import World  # noqa: E402


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("train-world"))
