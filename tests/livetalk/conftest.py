"""Shared tiny-model fixtures for the LiveTalk engine tests (CPU, fp32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
# The networks here are tiny: one thread is fastest, and several threads spin-wait badly
# when other processes share the cores.
torch.set_num_threads(1)

from avatar_node.engines.livetalk.config import DiTConfig, StreamConfig  # noqa: E402
from avatar_node.engines.livetalk.model import LiveTalkDiT  # noqa: E402
from avatar_node.engines.livetalk.sampler import BlockSampler, SessionState  # noqa: E402

#: Latent size of the tests: 4x4 latent -> 2x2 = 4 tokens per frame.
LATENT_HW = (4, 4)


def make_model(cfg: DiTConfig | None = None, seed: int = 0) -> LiveTalkDiT:
    torch.manual_seed(seed)
    model = LiveTalkDiT(cfg or DiTConfig.tiny()).eval()
    # Default inits leave the network nearly linear in places; widen the gates and audio
    # weights so every path visibly moves the output and the tests can fail.
    with torch.no_grad():
        for block in model.blocks:
            block.modulation.normal_(0.0, 0.5)
        for proj in model.audio_cond_projs:
            proj.weight.normal_(0.0, 0.5)
    return model


def open_session(sampler: BlockSampler, seed: int) -> SessionState:
    cfg = sampler.model.cfg
    g = torch.Generator().manual_seed(1000 + seed)
    reference = torch.randn((cfg.latent_channels, *LATENT_HW), generator=g)
    prompt = torch.randn((cfg.text_len - 2, cfg.text_dim), generator=g)
    return sampler.open_session(reference, prompt, seed=seed)


def audio_for(cfg: DiTConfig, sessions: int, stream: StreamConfig, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (sessions, stream.frames_per_block, cfg.audio_frames_per_latent, cfg.audio_feature_dim)
    return torch.randn(shape, generator=g)


@pytest.fixture
def tiny_model() -> LiveTalkDiT:
    return make_model()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A complete tiny weights directory (written once per test run; treat as read-only)."""
    from avatar_node.engines.livetalk.tiny import make_tiny_weights

    return make_tiny_weights(tmp_path_factory.mktemp("livetalk-weights"))


@pytest.fixture
def tiny_weights_copy(tiny_weights, tmp_path) -> Path:
    """A copy of the tiny weights directory that a test may break."""
    import shutil

    return Path(shutil.copytree(tiny_weights, tmp_path / "weights"))


def speech_16k(text: str) -> np.ndarray:
    """Real synthesised speech (espeak-ng), float32 mono at 16 kHz."""
    from avatar_node.media.audio import StreamResampler, to_float32
    from avatar_node.speech.tts import SpeechSynthesizer

    with SpeechSynthesizer() as tts:
        clip = tts.synthesize(text)
    resampler = StreamResampler(clip.sample_rate, 16_000, np.float32)
    return np.concatenate([resampler.process(to_float32(clip.samples)), resampler.flush()])
