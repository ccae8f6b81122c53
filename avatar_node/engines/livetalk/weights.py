"""The weights directory: its layout, what each file must hold, and the loaders.

Layout (the names the public downloads use)::

    WEIGHTS_DIR/
      LiveTalk-1.3B-V0.1/model.safetensors    the distilled causal student (GAIR/LiveTalk-1.3B-V0.1)
      LiveTalk-1.3B-V0.1/config.json          optional: other shapes (see config.ModelConfig);
                                              without it the released shapes are expected
      Wan2.1-T2V-1.3B/Wan2.1_VAE.pth          the Wan2.1 causal VAE (Wan-AI/Wan2.1-T2V-1.3B)
      Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth
      Wan2.1-T2V-1.3B/google/umt5-xxl/        the text encoder and its tokenizer: optional when
                                              every prompt used is pre-encoded in prompts/
      wav2vec2-base-960h/                     facebook/wav2vec2-base-960h: config.json,
                                              preprocessor_config.json, model.safetensors or
                                              pytorch_model.bin (the name wav2vec2/ also works)
      prompts/NAME.safetensors                pre-encoded prompts: "prompt_embeds" [tokens <= 512,
                                              4096], the umT5 output without its zero padding
      taew2_1.pth                             optional: the tiny Wan2.1 decoder (TAEHV,
                                              github.com/madebyollin/taehv) for `vae="tiny"`

Checks read only headers (safetensors) or memory-map the file on the meta device (torch
checkpoints), so nothing is loaded onto a device and large files cost nothing. Every
tensor of the DiT, the VAE, the text encoder and wav2vec2 is compared by name and shape
with the network built on the meta device from the same shapes the engine will use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import TensorInfo, load_checkpoint, read_safetensors_header, read_torch_checkpoint
from .config import DiTConfig, ModelConfig, TextEncoderConfig, VAEConfig
from .model import LiveTalkDiT, parameter_shapes
from .vae_tiny import TinyVAE, TinyVAEConfig, adapt_time_grow, tiny_vae_parameter_shapes

DIT_FILE = Path("LiveTalk-1.3B-V0.1/model.safetensors")
CONFIG_FILE = Path("LiveTalk-1.3B-V0.1/config.json")
VAE_FILE = Path("Wan2.1-T2V-1.3B/Wan2.1_VAE.pth")
TEXT_ENCODER_FILE = Path("Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth")
TOKENIZER_DIR = Path("Wan2.1-T2V-1.3B/google/umt5-xxl")
WAV2VEC_DIRS = (Path("wav2vec2-base-960h"), Path("wav2vec2"))
PROMPTS_DIR = Path("prompts")
#: The tiny decoder's file, named as its public download (madebyollin/taehv).
TINY_VAE_FILE = Path("taew2_1.pth")
TINY_VAE_SOURCE = "https://github.com/madebyollin/taehv (the file taew2_1.pth)"
PROMPT_KEY = "prompt_embeds"

#: Float formats the DiT may be stored in (safetensors names).
DIT_DTYPES = frozenset({"F32", "BF16", "F16"})
#: Prefixes training checkpoints put before the released names; the loader removes them.
DIT_PREFIXES = ("generator.", "model.", "module.")


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
    #: An optional component may be absent (its absence is judged elsewhere).
    optional: bool = False

    @property
    def ok(self) -> bool:
        return (self.found or self.optional) and not (
            self.missing or self.unexpected or self.mis_shaped or self.problems
        )

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
            lines.append("  not found" + (" (optional)" if self.optional else ""))
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


def _read_any(path: Path) -> dict[str, TensorInfo]:
    return read_safetensors_header(path) if path.suffix == ".safetensors" else read_torch_checkpoint(path)


def load_model_config(root: Path) -> ModelConfig:
    """The shapes of this weights directory: config.json beside the DiT, or the released ones."""
    path = root / CONFIG_FILE
    if not path.is_file():
        return ModelConfig()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return ModelConfig.from_json(data)


def check_config(root: Path) -> tuple[ComponentReport, ModelConfig]:
    path = root / CONFIG_FILE
    report = ComponentReport("shapes (config.json)", path)
    try:
        cfg = load_model_config(root)
    except ValueError as exc:
        report.problems.append(str(exc))
        return report, ModelConfig()
    if path.is_file():
        report.notes.append(
            f"non-default shapes: DiT {cfg.dit.num_layers} layers x {cfg.dit.dim}, VAE width {cfg.vae.dim}, "
            f"text encoder {cfg.text_encoder.num_layers} layers x {cfg.text_encoder.dim}, video "
            f"{cfg.video_width}x{cfg.video_height}"
        )
    else:
        report.notes.append("no config.json: the released shapes are expected (1.3B DiT, 512x512 video)")
    return report, cfg


def check_vae(path: Path, cfg: VAEConfig | None = None) -> ComponentReport:
    from .vae import vae_parameter_shapes

    report = ComponentReport("VAE (Wan2.1)", path)
    if not path.is_file():
        report.found = False
        report.problems.append("download Wan-AI/Wan2.1-T2V-1.3B (Wan2.1_VAE.pth) into this folder")
        return report
    try:
        found = read_torch_checkpoint(path)
    except (ValueError, RuntimeError, OSError, EOFError) as exc:
        report.problems.append(f"cannot read the checkpoint: {exc}")
        return report
    report.compare(found, vae_parameter_shapes(cfg), complete=True)
    report.notes.append(f"{len(found)} tensors; {report.expected} expected")
    return report


def check_tiny_vae(path: Path, latent_channels: int = 16) -> ComponentReport:
    """The optional tiny decoder: absent is fine, present must load strictly."""
    report = ComponentReport("tiny VAE decoder (TAEHV taew2_1, optional)", path, optional=True)
    if not path.is_file():
        report.found = False
        report.notes.append(f"only vae=tiny (avatar-node serve --vae tiny) needs it: {TINY_VAE_SOURCE}")
        return report
    try:
        found = read_torch_checkpoint(path)
    except (ValueError, RuntimeError, OSError, EOFError) as exc:
        report.problems.append(f"cannot read the checkpoint: {exc}")
        return report
    shapes = {name: info.shape for name, info in found.items()}
    try:
        cfg = TinyVAEConfig.from_shapes(shapes)
    except ValueError as exc:
        report.problems.append(f"{exc} (expected the Wan2.1 one, taew2_1.pth, from {TINY_VAE_SOURCE})")
        return report
    if cfg.latent_channels != latent_channels:
        report.problems.append(
            f"it decodes {cfg.latent_channels}-channel latents, the DiT makes {latent_channels} "
            "(taew2_2 and others are for other models: use taew2_1.pth)"
        )
    adapted = adapt_time_grow(shapes, cfg)
    for name, channels in adapted.items():
        report.notes.append(f"{name} holds {shapes[name][0]} output channels; the loader keeps the last {channels}")
        found[name] = TensorInfo((channels, *shapes[name][1:]), found[name].dtype)
    report.compare(found, tiny_vae_parameter_shapes(cfg), complete=True)
    widths = "released widths" if cfg.widths == TinyVAEConfig().widths else f"widths {list(cfg.widths)}"
    report.notes.append(f"{len(found)} tensors; {report.expected} expected ({widths})")
    return report


def find_wav2vec_dir(root: Path) -> Path:
    for name in WAV2VEC_DIRS:
        if (root / name).is_dir():
            return root / name
    return root / WAV2VEC_DIRS[0]


def _canonical_wav2vec_name(name: str) -> str:
    # Older checkpoints store the weight-normalised positional conv as weight_g / weight_v.
    return name.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"
    )


#: Tensors a wav2vec2 checkpoint may have that the feature path never reads.
_WAV2VEC_UNUSED = ("lm_head.", "masked_spec_embed", "quantizer.", "project_hid.", "project_q.")


def check_wav2vec(folder: Path, dit: DiTConfig | None = None) -> ComponentReport:
    dit = dit or DiTConfig()
    report = ComponentReport("wav2vec2 (base-960h)", folder)
    if not folder.is_dir():
        report.found = False
        report.problems.append("download facebook/wav2vec2-base-960h into this folder")
        return report
    preprocessor = folder / "preprocessor_config.json"
    if not preprocessor.is_file():
        report.problems.append("preprocessor_config.json is missing")
    else:
        try:
            pre = json.loads(preprocessor.read_text())
            if pre.get("sampling_rate", 16000) != 16000:
                report.problems.append(
                    f"preprocessor_config.json: sampling_rate {pre.get('sampling_rate')}, expected 16000"
                )
            if pre.get("do_normalize") is False:
                report.problems.append(
                    "preprocessor_config.json: do_normalize is false; the release normalises the clip"
                )
        except (OSError, json.JSONDecodeError) as exc:
            report.problems.append(f"preprocessor_config.json: {exc}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        report.problems.append("config.json is missing")
        return report
    try:
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        config = Wav2Vec2Config.from_json_file(str(config_path))
        with torch.device("meta"):
            expected_model = Wav2Vec2Model(config)
    except ImportError as exc:
        report.problems.append(f"reading wav2vec2 needs transformers ({exc}): pip install 'avatar-node[diffusion]'")
        return report
    except (OSError, ValueError, TypeError) as exc:
        report.problems.append(f"config.json: {exc}")
        return report
    features = config.hidden_size * (config.num_hidden_layers + 2)
    if features != dit.audio_feature_dim:
        report.problems.append(
            f"config.json gives {config.num_hidden_layers + 2} x {config.hidden_size} = {features} features per frame; "
            f"the DiT expects {dit.audio_feature_dim} (wav2vec2-base: 14 x 768)"
        )
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    if not weights:
        report.problems.append("no model.safetensors or pytorch_model.bin")
        return report
    try:
        found = _read_any(weights[0])
    except (ValueError, RuntimeError, OSError, EOFError) as exc:
        report.problems.append(f"cannot read {weights[0].name}: {exc}")
        return report
    # A CTC checkpoint nests the encoder under "wav2vec2." beside its lm_head.
    prefix = "wav2vec2." if any(name.startswith("wav2vec2.") for name in found) else ""
    found = {
        _canonical_wav2vec_name(n[len(prefix) :] if n.startswith(prefix) else n): info for n, info in found.items()
    }
    expected = {
        _canonical_wav2vec_name(n): tuple(t.shape)
        for n, t in expected_model.state_dict().items()
        if not n.startswith(_WAV2VEC_UNUSED)
    }
    report.compare(found, expected, complete=False)
    ignored = sorted(n for n in set(found) - set(expected) if not n.startswith(_WAV2VEC_UNUSED))
    if ignored:
        report.notes.append(f"ignored (not used): {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}")
    report.notes.append(f"{weights[0].name}: {len(found)} tensors; {report.expected} used, all checked")
    return report


def check_prompts(folder: Path, cfg: DiTConfig | None = None) -> ComponentReport:
    cfg = cfg or DiTConfig()
    report = ComponentReport("prompt embeddings (umT5, pre-encoded)", folder, optional=True)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        report.found = False
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


def check_text_encoder(root: Path, cfg: TextEncoderConfig | None = None) -> ComponentReport:
    from .text_encoder import text_encoder_parameter_shapes

    path = root / TEXT_ENCODER_FILE
    report = ComponentReport("text encoder (umT5-XXL)", path, optional=True)
    if not path.is_file():
        report.found = False
        return report
    try:
        found = read_torch_checkpoint(path)
    except (ValueError, RuntimeError, OSError, EOFError) as exc:
        report.problems.append(f"cannot read the checkpoint: {exc}")
        return report
    report.compare(found, text_encoder_parameter_shapes(cfg), complete=True)
    tokenizer = root / TOKENIZER_DIR
    if not any((tokenizer / n).is_file() for n in ("tokenizer.json", "spiece.model")):
        report.problems.append(f"no tokenizer in {tokenizer} (download google/umt5-xxl's tokenizer files there)")
    report.notes.append(f"{len(found)} tensors; {report.expected} expected; tokenizer in {TOKENIZER_DIR}")
    return report


def check_weights_dir(root: Path) -> list[ComponentReport]:
    """Reports for every file the engine reads, in a fixed order."""
    from .prompts import DEFAULT_PROMPT, PromptStore

    config_report, cfg = check_config(root)
    prompts = check_prompts(root / PROMPTS_DIR, cfg.dit)
    encoder = check_text_encoder(root, cfg.text_encoder)
    reports = [
        config_report,
        check_dit(root / DIT_FILE, cfg.dit),
        check_vae(root / VAE_FILE, cfg.vae),
        check_wav2vec(find_wav2vec_dir(root), cfg.dit),
        prompts,
        encoder,
        check_tiny_vae(root / TINY_VAE_FILE, cfg.vae.z_dim),
    ]
    can_encode = encoder.found and encoder.ok
    if not encoder.found:
        encoder.notes.append("prompts must then be pre-encoded (avatar-node encode-prompts on a machine that has it)")
    if prompts.ok:
        has_default = prompts.found and PromptStore(root / PROMPTS_DIR).has(DEFAULT_PROMPT)
        if not has_default and not can_encode:
            prompts.problems.append(
                "the default prompt is not pre-encoded and there is no text encoder: add the umT5-XXL encoder "
                "and tokenizer, or copy a prompts/ folder made by `avatar-node encode-prompts`"
            )
        elif not prompts.found:
            prompts.notes.append("no prompts cached yet; they are encoded on first use")
    return reports


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
        state = load_checkpoint(path)
    prefix = _strip_prefix(state, DIT_PREFIXES)
    state = {name[len(prefix) :]: tensor.to(dtype) for name, tensor in state.items()}
    with torch.device("meta"):
        model = LiveTalkDiT(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_tiny_vae(
    path: Path | str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    latent_channels: int = 16,
) -> TinyVAE:
    """Build the tiny autoencoder and load ``taew2_1.pth`` into it strictly, by the
    checkpoint's own names; widths come from the checkpoint.

    Raises ValueError naming every missing, unexpected or mis-shaped tensor.
    """
    path = Path(path)
    report = check_tiny_vae(path, latent_channels)
    if not report.found or not report.ok:
        raise ValueError(f"cannot load the tiny VAE decoder:\n{report.describe()}")
    state = load_checkpoint(path)
    shapes = {name: tuple(t.shape) for name, t in state.items()}
    cfg = TinyVAEConfig.from_shapes(shapes)
    for name, channels in adapt_time_grow(shapes, cfg).items():
        state[name] = state[name][-channels:]
    with torch.device("meta"):
        model = TinyVAE(cfg)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)
