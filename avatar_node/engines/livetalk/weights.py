"""The weights directory: its layout, what each file must hold, and the DiT loader.

Layout (the names the public downloads use)::

    WEIGHTS_DIR/
      LiveTalk-1.3B-V0.1/model.safetensors   the distilled causal student (GAIR/LiveTalk-1.3B-V0.1)
      Wan2.1-T2V-1.3B/Wan2.1_VAE.pth         the Wan2.1 causal VAE (Wan-AI/Wan2.1-T2V-1.3B)
      wav2vec2/                              facebook/wav2vec2-base-960h: config.json,
                                             preprocessor_config.json, model.safetensors
                                             or pytorch_model.bin (wav2vec2-base-960h/ also accepted)
      prompts/NAME.safetensors               pre-encoded prompts: a tensor "prompt_embeds"
                                             [tokens <= 512, 4096], the umT5-XXL encoder output
                                             without its zero padding

Checks read only headers (safetensors) or memory-map the file on the meta device
(torch checkpoints), so nothing is loaded onto a device and large files cost nothing.
The DiT is checked completely (every name and shape of the model built on the meta
device); the VAE and wav2vec2 against the subset of their keys established from the
public Wan2.1 and transformers code (listed below); prompts by name and shape.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch

from .config import DiTConfig
from .model import LiveTalkDiT, parameter_shapes

DIT_FILE = Path("LiveTalk-1.3B-V0.1/model.safetensors")
VAE_FILE = Path("Wan2.1-T2V-1.3B/Wan2.1_VAE.pth")
WAV2VEC_DIRS = (Path("wav2vec2"), Path("wav2vec2-base-960h"))
PROMPTS_DIR = Path("prompts")
PROMPT_KEY = "prompt_embeds"

#: Float formats the DiT may be stored in (safetensors names).
DIT_DTYPES = frozenset({"F32", "BF16", "F16"})
#: Prefixes training checkpoints put before the released names; the loader removes them.
DIT_PREFIXES = ("generator.", "model.", "module.")


def _vae_expected() -> dict[str, tuple[int, ...]]:
    """Keys of the Wan2.1 VAE (base width 96, z 16, widths 96/192/384/384) the engine relies on."""
    c3 = (3, 3, 3)
    return {
        "encoder.conv1.weight": (96, 3, *c3),
        "encoder.conv1.bias": (96,),
        "encoder.middle.1.norm.gamma": (384, 1, 1),
        "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
        "encoder.head.0.gamma": (384, 1, 1, 1),
        "encoder.head.2.weight": (32, 384, *c3),
        "encoder.head.2.bias": (32,),
        "conv1.weight": (32, 32, 1, 1, 1),
        "conv1.bias": (32,),
        "conv2.weight": (16, 16, 1, 1, 1),
        "conv2.bias": (16,),
        "decoder.conv1.weight": (384, 16, *c3),
        "decoder.conv1.bias": (384,),
        "decoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
        "decoder.head.0.gamma": (96, 1, 1, 1),
        "decoder.head.2.weight": (3, 96, *c3),
        "decoder.head.2.bias": (3,),
    }


def _wav2vec_expected() -> dict[str, tuple[int, ...]]:
    """Keys of wav2vec2-base (7 conv layers, 12 transformer layers of 768) the audio path needs."""
    keys: dict[str, tuple[int, ...]] = {
        "feature_extractor.conv_layers.0.conv.weight": (512, 1, 10),
        "feature_extractor.conv_layers.0.layer_norm.weight": (512,),
        "feature_projection.projection.weight": (768, 512),
        "encoder.layer_norm.weight": (768,),
    }
    for i in range(1, 7):
        keys[f"feature_extractor.conv_layers.{i}.conv.weight"] = (512, 512, 3 if i < 5 else 2)
    for layer in range(12):
        prefix = f"encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[f"{prefix}.attention.{proj}.weight"] = (768, 768)
        keys[f"{prefix}.feed_forward.intermediate_dense.weight"] = (3072, 768)
        keys[f"{prefix}.feed_forward.output_dense.weight"] = (768, 3072)
    return keys


VAE_EXPECTED = _vae_expected()
WAV2VEC_EXPECTED = _wav2vec_expected()


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes in a safetensors file, from its header alone."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size, 100_000_000):
            raise ValueError(f"{path} is not a safetensors file (header length {length})")
        header = json.loads(f.read(length))
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["data_offsets"][1] > data_size:
            raise ValueError(f"{path} is truncated ({name} ends past the end of the file); download it again")
        tensors[name] = TensorInfo(tuple(entry["shape"]), entry["dtype"])
    return tensors


def read_torch_checkpoint(path: Path) -> dict[str, TensorInfo]:
    """Names and shapes in a torch checkpoint, memory-mapped on the meta device."""
    try:
        state = torch.load(path, map_location="meta", mmap=True, weights_only=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        state = torch.load(path, map_location="meta", weights_only=True)
    state = _unwrap(state)
    return {k: TensorInfo(tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _unwrap(state: object) -> Mapping[str, object]:
    """Training checkpoints nest the weights under one of these keys."""
    if not isinstance(state, Mapping):
        raise ValueError("the checkpoint does not hold a state dict")
    for key in ("generator_ema", "generator", "state_dict", "model"):
        if isinstance(state.get(key), Mapping):
            return state[key]  # type: ignore[return-value]
    return state


def _strip_prefix(names: Iterable[str], prefixes: Iterable[str]) -> str:
    """The prefix every name carries, if one of `prefixes`; else ""."""
    names = list(names)
    for prefix in prefixes:
        if names and all(n.startswith(prefix) for n in names):
            return prefix
    return ""


@dataclass
class ComponentReport:
    """What one component of the weights directory holds, compared with what the engine needs."""

    name: str
    path: Path
    found: bool = True
    expected: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.found and not (self.missing or self.unexpected or self.mis_shaped or self.problems)

    def compare(
        self, found: Mapping[str, TensorInfo], expected: Mapping[str, tuple[int, ...]], *, complete: bool
    ) -> None:
        self.expected = len(expected)
        self.missing = sorted(set(expected) - set(found))
        if complete:
            self.unexpected = sorted(set(found) - set(expected))
        self.mis_shaped = [
            (name, tuple(shape), found[name].shape)
            for name, shape in expected.items()
            if name in found and found[name].shape != tuple(shape)
        ]

    def describe(self) -> str:
        status = "ok" if self.ok else "PROBLEM"
        lines = [f"{self.name}: {status}  ({self.path})"]
        if not self.found:
            lines.append("  not found")
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  missing: {name}" for name in self.missing]
        lines += [f"  unexpected: {name}" for name in self.unexpected]
        lines += [f"  wrong shape: {n} is {list(got)}, expected {list(want)}" for n, want, got in self.mis_shaped]
        return "\n".join(lines)


def check_dit(path: Path, cfg: DiTConfig | None = None) -> ComponentReport:
    report = ComponentReport("DiT (LiveTalk-1.3B)", path)
    if not path.is_file():
        report.found = False
        report.problems.append("download GAIR/LiveTalk-1.3B-V0.1 into this folder")
        return report
    try:
        found = read_safetensors_header(path) if path.suffix == ".safetensors" else read_torch_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as exc:
        report.problems.append(str(exc))
        return report
    prefix = _strip_prefix(found, DIT_PREFIXES)
    if prefix:
        report.notes.append(f"names carry the prefix {prefix!r}; the loader removes it")
        found = {name[len(prefix) :]: info for name, info in found.items()}
    report.compare(found, {k: tuple(v) for k, v in parameter_shapes(cfg).items()}, complete=True)
    dtypes = {info.dtype for info in found.values()}
    odd = sorted(dtypes - DIT_DTYPES - {"float32", "bfloat16", "float16"})
    if odd:
        report.problems.append(f"tensors stored as {', '.join(odd)}; expected F32, BF16 or F16")
    report.notes.append(f"{len(found)} tensors ({', '.join(sorted(dtypes))}); {report.expected} expected")
    return report


def check_vae(path: Path) -> ComponentReport:
    report = ComponentReport("VAE (Wan2.1)", path)
    if not path.is_file():
        report.found = False
        report.problems.append("download Wan-AI/Wan2.1-T2V-1.3B (Wan2.1_VAE.pth) into this folder")
        return report
    try:
        found = read_torch_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as exc:
        report.problems.append(f"cannot read the checkpoint: {exc}")
        return report
    report.compare(found, VAE_EXPECTED, complete=False)
    report.notes.append(f"{len(found)} tensors; checked the {report.expected} the engine relies on")
    return report


def find_wav2vec_dir(root: Path) -> Path:
    for name in WAV2VEC_DIRS:
        if (root / name).is_dir():
            return root / name
    return root / WAV2VEC_DIRS[0]


def check_wav2vec(folder: Path) -> ComponentReport:
    report = ComponentReport("wav2vec2 (base-960h)", folder)
    if not folder.is_dir():
        report.found = False
        report.problems.append("download facebook/wav2vec2-base-960h into this folder")
        return report
    for name in ("config.json", "preprocessor_config.json"):
        if not (folder / name).is_file():
            report.problems.append(f"{name} is missing")
    config_path = folder / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        if (config.get("hidden_size"), config.get("num_hidden_layers")) != (768, 12):
            report.problems.append(
                "config.json is not wav2vec2-base (hidden_size 768, 12 layers): the DiT expects 14 x 768 features"
            )
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    if not weights:
        report.problems.append("no model.safetensors or pytorch_model.bin")
        return report
    try:
        path = weights[0]
        found = read_safetensors_header(path) if path.suffix == ".safetensors" else read_torch_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as exc:
        report.problems.append(f"cannot read {weights[0].name}: {exc}")
        return report
    # A CTC checkpoint nests the encoder under "wav2vec2." beside its lm_head.
    prefix = "wav2vec2." if any(name.startswith("wav2vec2.") for name in found) else ""
    found = {name[len(prefix) :]: info for name, info in found.items() if name.startswith(prefix)}
    report.compare(found, WAV2VEC_EXPECTED, complete=False)
    report.notes.append(f"{weights[0].name}: {len(found)} tensors; checked the {report.expected} the engine relies on")
    return report


def check_prompts(folder: Path, cfg: DiTConfig | None = None) -> ComponentReport:
    cfg = cfg or DiTConfig()
    report = ComponentReport("text embeddings (umT5-XXL, pre-encoded)", folder)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        report.found = False
        report.problems.append(f"no prompts: put NAME.safetensors files with a [tokens, {cfg.text_dim}] {PROMPT_KEY!r} here")
        return report
    for path in files:
        try:
            found = read_safetensors_header(path)
        except (ValueError, OSError) as exc:
            report.problems.append(str(exc))
            continue
        if PROMPT_KEY not in found:
            report.missing.append(f"{path.name}: {PROMPT_KEY}")
        report.unexpected += [f"{path.name}: {name}" for name in sorted(found) if name != PROMPT_KEY]
        if PROMPT_KEY in found:
            shape = found[PROMPT_KEY].shape
            if len(shape) != 2 or shape[1] != cfg.text_dim or not 0 < shape[0] <= cfg.text_len:
                report.mis_shaped.append((f"{path.name}: {PROMPT_KEY}", (cfg.text_len, cfg.text_dim), shape))
    report.expected = len(files)
    report.notes.append(f"{len(files)} prompt file(s): {', '.join(p.stem for p in files)}")
    return report


def check_weights_dir(root: Path, cfg: DiTConfig | None = None) -> list[ComponentReport]:
    """Reports for every component the engine needs, in a fixed order."""
    return [
        check_dit(root / DIT_FILE, cfg),
        check_vae(root / VAE_FILE),
        check_wav2vec(find_wav2vec_dir(root)),
        check_prompts(root / PROMPTS_DIR, cfg),
    ]


def load_dit(
    path: Path | str,
    cfg: DiTConfig | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> LiveTalkDiT:
    """Build the DiT and load the released weights into it by their own names."""
    path = Path(path)
    report = check_dit(path, cfg)
    if not report.ok:
        raise ValueError(f"cannot load the DiT:\n{report.describe()}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device=str(device))
    else:
        state = dict(_unwrap(torch.load(path, map_location=device, mmap=True, weights_only=True)))
    prefix = _strip_prefix(state, DIT_PREFIXES)
    state = {name[len(prefix) :]: tensor.to(dtype) for name, tensor in state.items()}
    with torch.device("meta"):
        model = LiveTalkDiT(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)
