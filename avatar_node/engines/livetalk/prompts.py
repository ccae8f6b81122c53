"""Text prompts: umT5 embeddings computed once per prompt and cached on disk.

The cache is the weights directory's ``prompts/`` folder: one safetensors file per prompt
holding ``prompt_embeds`` [tokens, 4096] (the encoder output for the real tokens) and the
prompt text in its metadata. A prompt can be asked for by its text or by its file's stem.
A miss is encoded with the umT5 encoder when the directory has it (then stored, so the
next session hits), else it is an error that says how to pre-encode it.

Behaviour names map to prompts (`BEHAVIOUR_PROMPTS`); the engine acts on the behaviours
whose prompt is available.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from .text_encoder import PromptEncoder, clean_prompt

PROMPT_KEY = "prompt_embeds"

#: The release's default prompt (configs of GAIR-NLP/LiveTalk).
DEFAULT_PROMPT = (
    "A realistic video of a person speaking directly to the camera. The individual maintains steady "
    "eye contact with clear, expressive facial features. Their facial expressions are naturally "
    "animated and emotionally engaging, with precise lip movements perfectly synchronized to their speech."
)

#: Prompts for behaviours: "listening" is used while the user speaks and the avatar does not;
#: the others for a few blocks after the behaviour is triggered.
BEHAVIOUR_PROMPTS: dict[str, str] = {
    "listening": (
        "A realistic video of a person listening attentively to someone off camera, looking at the "
        "camera with the mouth closed, nodding slightly now and then, calm and engaged."
    ),
    "smile": "A realistic video of a person looking at the camera and smiling warmly, with a friendly expression.",
    "nod": "A realistic video of a person looking at the camera and nodding their head in agreement.",
    "shake": "A realistic video of a person looking at the camera and gently shaking their head.",
    "raise_eyebrows": "A realistic video of a person looking at the camera and raising their eyebrows in surprise.",
}


class PromptNotEncoded(LookupError):
    """A prompt has no cached embeddings and no text encoder is available."""


def prompt_file_name(text: str) -> str:
    """A readable, collision-safe file name: the first words plus a hash of the full text."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-").split("-")[:6]
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{'-'.join(w for w in words if w) or 'prompt'}-{digest}.safetensors"


class PromptStore:
    """Cached prompt embeddings in one folder; thread-safe."""

    def __init__(self, folder: Path | str, encoder_factory: Callable[[], PromptEncoder] | None = None) -> None:
        self.folder = Path(folder)
        self._encoder_factory = encoder_factory
        self._lock = threading.Lock()
        self._by_text: dict[str, Path] = {}
        self._by_name: dict[str, Path] = {}
        self.hits = 0
        self.misses = 0
        self._scan()

    @property
    def can_encode(self) -> bool:
        return self._encoder_factory is not None

    def _scan(self) -> None:
        from safetensors import safe_open

        self._by_text.clear()
        self._by_name.clear()
        for path in sorted(self.folder.glob("*.safetensors")) if self.folder.is_dir() else []:
            with safe_open(str(path), "pt") as f:
                text = (f.metadata() or {}).get("prompt")
            self._by_name[path.stem] = path
            if text:
                self._by_text[clean_prompt(text)] = path

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def texts(self) -> list[str]:
        return sorted(self._by_text)

    def find(self, prompt: str) -> Path | None:
        """The cached file of a prompt given by text or by name, if any."""
        return self._by_name.get(prompt) or self._by_text.get(clean_prompt(prompt))

    def has(self, prompt: str) -> bool:
        return self.find(prompt) is not None

    def get(self, prompt: str) -> torch.Tensor:
        """Embeddings [tokens, dim] of a prompt (text or name); encodes and stores a miss."""
        from safetensors.torch import load_file

        with self._lock:
            path = self.find(prompt)
            if path is not None:
                self.hits += 1
                return load_file(str(path))[PROMPT_KEY]
            self.misses += 1
            if self._encoder_factory is None:
                raise PromptNotEncoded(
                    f"the prompt {prompt[:60]!r} is not pre-encoded and the weights directory has no text "
                    f'encoder; encode it with: avatar-node encode-prompts WEIGHTS_DIR "{prompt}"'
                )
            (embeds,) = self._encode_and_store([prompt])
            return embeds

    def encode(self, prompts: Iterable[str]) -> list[Path]:
        """Make sure every prompt is cached; encode the missing ones in one encoder load."""
        with self._lock:
            missing = [p for p in dict.fromkeys(prompts) if self.find(p) is None]
            if missing:
                if self._encoder_factory is None:
                    raise PromptNotEncoded(
                        "the weights directory has no text encoder (umT5-XXL + tokenizer) to encode prompts with"
                    )
                self._encode_and_store(missing)
            return [self.find(p) for p in prompts]  # type: ignore[misc]

    def put(self, prompt: str, embeds: torch.Tensor) -> Path:
        with self._lock:
            return self._store(prompt, embeds)

    def _encode_and_store(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        assert self._encoder_factory is not None
        encoder = self._encoder_factory()
        try:
            embeds = encoder.encode(prompts)
        finally:
            del encoder  # the encoder is large: never keep it past the call
        for prompt, e in zip(prompts, embeds):
            self._store(prompt, e)
        return embeds

    def _store(self, prompt: str, embeds: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        text = clean_prompt(prompt)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / prompt_file_name(text)
        tmp = path.with_suffix(".tmp")
        save_file({PROMPT_KEY: embeds.detach().contiguous().cpu()}, str(tmp), metadata={"prompt": text})
        tmp.replace(path)  # atomic: a reader never sees half a file
        self._by_text[text] = path
        self._by_name[path.stem] = path
        return path
