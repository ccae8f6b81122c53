"""Prompt embeddings: encoded once, cached on disk, found again by text or name."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from avatar_node import cli  # noqa: E402
from avatar_node.engines.livetalk.config import ModelConfig  # noqa: E402
from avatar_node.engines.livetalk.prompts import (  # noqa: E402
    DEFAULT_PROMPT,
    PromptNotEncoded,
    PromptStore,
)
from avatar_node.engines.livetalk.text_encoder import PromptEncoder, clean_prompt  # noqa: E402
from avatar_node.engines.livetalk.weights import (  # noqa: E402
    PROMPTS_DIR,
    TEXT_ENCODER_FILE,
    TOKENIZER_DIR,
    load_model_config,
)


class CountingFactory:
    def __init__(self, root: Path, cfg: ModelConfig) -> None:
        self.root, self.cfg, self.calls = root, cfg, 0

    def __call__(self) -> PromptEncoder:
        self.calls += 1
        return PromptEncoder(self.root / TEXT_ENCODER_FILE, self.root / TOKENIZER_DIR, self.cfg.text_encoder)


def test_miss_encodes_and_stores_then_hits(tiny_weights_copy: Path):
    root = tiny_weights_copy
    factory = CountingFactory(root, load_model_config(root))
    store = PromptStore(root / PROMPTS_DIR, factory)
    prompt = "A person   talking calmly &amp; smiling"
    assert not store.has(prompt)
    first = store.get(prompt)
    assert (store.misses, store.hits, factory.calls) == (1, 0, 1)
    assert first.shape[1] == factory.cfg.dit.text_dim and 0 < first.shape[0] <= factory.cfg.dit.text_len

    # A new store (a restarted node) finds it on disk: no encoder call. Text is cleaned first.
    again = PromptStore(root / PROMPTS_DIR, factory)
    torch.testing.assert_close(again.get("A person talking calmly & smiling"), first, rtol=0, atol=0)
    assert (again.hits, again.misses, factory.calls) == (1, 0, 1)
    # ... and by its file name.
    name = again.find(prompt).stem
    torch.testing.assert_close(again.get(name), first, rtol=0, atol=0)
    assert clean_prompt(prompt) in again.texts()


def test_cached_embeddings_equal_a_fresh_encoding(tiny_weights: Path):
    cfg = load_model_config(tiny_weights)
    store = PromptStore(tiny_weights / PROMPTS_DIR)
    encoder = PromptEncoder(tiny_weights / TEXT_ENCODER_FILE, tiny_weights / TOKENIZER_DIR, cfg.text_encoder)
    (fresh,) = encoder.encode([DEFAULT_PROMPT])
    torch.testing.assert_close(store.get(DEFAULT_PROMPT), fresh, rtol=1e-6, atol=1e-6)
    # Padding is masked: a prompt's embeddings do not depend on what else is in the batch.
    short, long = encoder.encode(["a person", DEFAULT_PROMPT])
    torch.testing.assert_close(encoder.encode(["a person"])[0], short, rtol=1e-5, atol=1e-5)


def test_miss_without_encoder_says_how_to_encode(tiny_weights: Path):
    store = PromptStore(tiny_weights / PROMPTS_DIR)  # no encoder
    with pytest.raises(PromptNotEncoded, match='avatar-node encode-prompts WEIGHTS_DIR "never seen"'):
        store.get("never seen")
    assert store.misses == 1


def test_encode_prompts_command(tiny_weights_copy: Path, capsys):
    root = tiny_weights_copy
    assert cli.main(["encode-prompts", str(root), "a new prompt", DEFAULT_PROMPT]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("encoded  prompts/a-new-prompt-") and out[1].startswith("cached ")
    assert PromptStore(root / PROMPTS_DIR).has("a new prompt")
    (root / TEXT_ENCODER_FILE).unlink()
    assert cli.main(["encode-prompts", str(root), "x"]) == 1
    assert "has no text encoder" in capsys.readouterr().err
