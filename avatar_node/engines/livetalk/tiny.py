"""`avatar-node make-tiny-weights DIR`: a complete random-weight weights directory at tiny size.

Same layout and file formats as the real download (see weights.py), with a config.json
beside the DiT giving the tiny shapes: a 6-layer DiT of width 48, the Wan2.1 VAE topology
at base width 8, a 2-layer wav2vec2 of width 16 saved as a Hugging Face folder, a 2-layer
umT5 encoder with a small word-level tokenizer, the built-in prompts pre-encoded with it,
and the optional tiny VAE decoder at widths 16/8 (a few kB, so always written: `vae="tiny"`
runs too). Everything runs on a CPU in seconds; the video is 32x32 by default. The output is
noise-like (random weights): it exercises every code path, not the picture.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from .config import DiTConfig, ModelConfig, TextEncoderConfig, VAEConfig
from .weights import (
    CONFIG_FILE,
    DIT_FILE,
    PROMPTS_DIR,
    TEXT_ENCODER_FILE,
    TINY_VAE_FILE,
    TOKENIZER_DIR,
    VAE_FILE,
    WAV2VEC_DIRS,
)

#: Tiny wav2vec2: 2 layers of 16 -> (2 + 2) x 16 = 64 features per frame.
_W2V_HIDDEN, _W2V_LAYERS = 16, 2


def tiny_model_config(video_size: int = 32, vocab_size: int = 64) -> ModelConfig:
    text = TextEncoderConfig.tiny(vocab_size=vocab_size, dim=16, text_len=16)
    dit = DiTConfig.tiny(text_dim=text.dim, text_len=text.text_len, audio_feature_dim=_W2V_HIDDEN * (_W2V_LAYERS + 2))
    return ModelConfig(
        dit=dit, vae=VAEConfig.tiny(), text_encoder=text, video_height=video_size, video_width=video_size
    )


def _tokenizer_words() -> list[str]:
    from .prompts import BEHAVIOUR_PROMPTS, DEFAULT_PROMPT

    words: dict[str, None] = {}
    for text in (DEFAULT_PROMPT, *BEHAVIOUR_PROMPTS.values()):
        for word in re.findall(r"\w+|[^\w\s]", text.lower()):
            words[word] = None
    return list(words)


def _write_tokenizer(folder: Path) -> int:
    """A word-level tokenizer with umT5's special ids (pad 0, eos 1, unk 2); returns the vocab size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in _tokenizer_words():
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(folder))
    return len(vocab)


def _widen(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Default inits leave a random DiT nearly blind to its gates and audio; widen them so
    every input visibly moves the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation") or name.startswith("audio_cond_projs") and name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


def _write_wav2vec(folder: Path, config: object) -> None:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    Wav2Vec2ForCTC(config).save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(str(folder))


def make_tiny_weights(directory: Path | str, *, video_size: int = 32, seed: int = 0) -> Path:
    """Write a complete tiny weights directory; returns its path. Overwrites tiny files there.

    This is also the fixture for tests that serve the engine: ``LiveTalkEngine(make_tiny_weights(tmp))``.
    """
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config

    from .model import LiveTalkDiT
    from .prompts import BEHAVIOUR_PROMPTS, DEFAULT_PROMPT, PromptStore
    from .text_encoder import PromptEncoder, UMT5Encoder
    from .vae import WanVAE
    from .vae_tiny import TinyVAE, TinyVAEConfig

    root = Path(directory)
    for path in (DIT_FILE, VAE_FILE, TOKENIZER_DIR / "x"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer(root / TOKENIZER_DIR)
    cfg = tiny_model_config(video_size, vocab)
    (root / CONFIG_FILE).write_text(json.dumps(cfg.to_json(), indent=2) + "\n")

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dit = LiveTalkDiT(cfg.dit)
    _widen(dit, g)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(root / DIT_FILE))
    torch.save(WanVAE(cfg.vae).state_dict(), root / VAE_FILE)
    torch.save(UMT5Encoder(cfg.text_encoder).state_dict(), root / TEXT_ENCODER_FILE)
    torch.save(TinyVAE(TinyVAEConfig.tiny()).state_dict(), root / TINY_VAE_FILE)
    _write_wav2vec(
        root / WAV2VEC_DIRS[0],
        Wav2Vec2Config(
            hidden_size=_W2V_HIDDEN,
            num_hidden_layers=_W2V_LAYERS,
            num_attention_heads=2,
            intermediate_size=2 * _W2V_HIDDEN,
            conv_dim=(16,) * 7,  # kernels and strides stay wav2vec2's: 320-sample hop, 400-sample field
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            vocab_size=32,
        ),
    )

    def encoder() -> PromptEncoder:
        return PromptEncoder(root / TEXT_ENCODER_FILE, root / TOKENIZER_DIR, cfg.text_encoder)

    PromptStore(root / PROMPTS_DIR, encoder).encode([DEFAULT_PROMPT, *BEHAVIOUR_PROMPTS.values()])
    return root


def make_full_size_random_weights(directory: Path | str, *, seed: int = 0, device: str = "cpu") -> Path:
    """The released shapes with random weights (for benchmarks): 1.3B DiT in bf16, the VAE,
    the tiny VAE decoder (taew2_1.pth's widths), wav2vec2-base, and random "prompt embeddings"
    of umT5's width. No text encoder, no config.json. Needs about 3.5 GB of disk and, on a
    CPU, about 8 GB of memory."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config

    from .config import ModelConfig
    from .model import LiveTalkDiT
    from .prompts import BEHAVIOUR_PROMPTS, DEFAULT_PROMPT, PromptStore
    from .vae import WanVAE
    from .vae_tiny import TinyVAE

    root = Path(directory)
    for path in (DIT_FILE, VAE_FILE):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig()
    torch.manual_seed(seed)
    with torch.device(device):
        dit = LiveTalkDiT(cfg.dit)
    save_file({k: v.to(torch.bfloat16).contiguous().cpu() for k, v in dit.state_dict().items()}, str(root / DIT_FILE))
    del dit
    torch.save(WanVAE(cfg.vae).state_dict(), root / VAE_FILE)
    torch.save(TinyVAE().state_dict(), root / TINY_VAE_FILE)
    _write_wav2vec(root / WAV2VEC_DIRS[0], Wav2Vec2Config())
    store = PromptStore(root / PROMPTS_DIR)
    g = torch.Generator().manual_seed(seed)
    for text in (DEFAULT_PROMPT, *BEHAVIOUR_PROMPTS.values()):
        store.put(text, (torch.randn(96, cfg.dit.text_dim, generator=g) * 0.1).to(torch.bfloat16))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="avatar-node make-tiny-weights",
        description="Write a complete random-weight weights directory for the livetalk engine at tiny "
        "size (runs on a CPU in seconds; the video is noise-like). For tests, CI and trying the engine out.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--size", type=int, default=32, help="video width = height in pixels, a multiple of 16 (default 32)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size < 16 or args.size % 16:
        print("error: --size must be a multiple of 16, at least 16", file=sys.stderr)
        return 2
    try:
        root = make_tiny_weights(args.directory, video_size=args.size, seed=args.seed)
    except OSError as exc:
        print(f"error: cannot write {args.directory}: {exc}", file=sys.stderr)
        return 1
    print(f"tiny weights written to {root}; check them with: avatar-node check-weights {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
