"""Pipecat integration fixtures: the sample photo, real speech (espeak-ng), a node on loopback.

Without Pipecat installed these tests skip (see the README's Pipecat section for why it is
installed on its own), except under CI (CI=true), where .ci/run installs it and its absence fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

if os.environ.get("CI", "").lower() == "true":
    import pipecat  # noqa: F401
else:
    pytest.importorskip("pipecat", reason="Pipecat is not installed (see the README's Pipecat section)")

from avatar_node.server import NodeConfig, start_background_node  # noqa: E402

from ..support.media import LONG_SENTENCE, SHORT_SENTENCE, speech_clip  # noqa: E402
from .harness import Speech  # noqa: E402


def _synthesize(text: str) -> Speech:
    return Speech(*speech_clip(text))


@pytest.fixture(scope="session")
def short_speech() -> Speech:
    return _synthesize(SHORT_SENTENCE)


@pytest.fixture(scope="session")
def long_speech() -> Speech:
    return _synthesize(LONG_SENTENCE)


@pytest.fixture(scope="module")
def node() -> Iterator[object]:
    with start_background_node(NodeConfig(host="127.0.0.1", port=0, max_sessions=4,
                                          engines=["portrait", "testcard"])) as running:
        yield running
