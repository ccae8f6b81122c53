"""A tiny causal decoder for Wan2.1 latents: the fast, lower-quality alternative to the full
VAE's decoder, for `LiveTalkEngine(vae="tiny")`.

It follows the TAEHV design (its Wan2.1 checkpoint is ``taew2_1.pth``) and its module tree
mirrors that checkpoint, so the file loads strictly by its own names (``encoder.*``,
``decoder.*``). Facts about the design that this file restates:

* Everything is 2-D and per frame except two things: each "memory block" sees its input
  frame beside the input frame before it (zeros at the start of a stream), and each "time
  grow" step turns one frame into 1 or 2 by a 1x1 convolution whose output channels are
  the new frames side by side. For Wan2.1 the three decoder stages grow time by 1, 2, 2:
  one latent -> 4 frames. The decoder is therefore causal, with one frame of memory per block.
* The first 3 frames of a stream are dropped, so latents 0..T-1 give 4T - 3 frames, as the
  Wan2.1 VAE does (latent 0 -> 1 frame, later latents -> 4).
* It takes the latents the DiT makes, already normalised ((mu - mean) / std with Wan2.1's
  constants): no rescaling here, unlike the full VAE. Its output is in [0, 1]; this file
  returns [-1, 1] like `vae.WanVAE`.
* The checkpoint also holds an encoder. It is built so the file loads strictly, but the
  engine never runs it: the reference image is always encoded by the full VAE.

Channel widths are read from the checkpoint itself (`TinyVAEConfig.from_shapes`), so the
tiny random checkpoint of tests (`make-tiny-weights`) and the released one use one code path.

Decoding block by block (`TinyDecodeStream`) keeps each memory block's last input frame and
equals decoding the whole clip at once (`TinyVAE.decode`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

#: Layer indices (the checkpoint's names) of the convolutions that set each width: the
#: decoder's input conv and the convs closing its three stages; the encoder's input conv.
_DECODER_WIDTH_CONVS = (1, 8, 14, 20)
_ENCODER_WIDTH_CONV = 0


class StreamDecoder(Protocol):
    """What the engine needs of a decode stream (`vae.DecodeStream` and `TinyDecodeStream`)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def reset(self) -> None: ...

    @property
    def nbytes(self) -> int: ...


@dataclass(frozen=True)
class TinyVAEConfig:
    """Widths of the tiny autoencoder. The default is the released Wan2.1 one."""

    latent_channels: int = 16
    #: Decoder widths: the three stages, then the last hidden layer.
    widths: tuple[int, int, int, int] = (256, 128, 64, 64)
    encoder_width: int = 64
    #: Whether each decoder stage doubles time (Wan2.1: 4x over the last two stages).
    time_upscale: tuple[bool, bool, bool] = (False, True, True)
    #: Whether each encoder stage halves time.
    time_downscale: tuple[bool, bool, bool] = (True, True, False)

    @property
    def frames_per_latent(self) -> int:
        return 2 ** sum(self.time_upscale)

    @property
    def frames_to_trim(self) -> int:
        """Frames dropped at the start of a stream so latent 0 gives one frame."""
        return self.frames_per_latent - 1

    @classmethod
    def tiny(cls) -> TinyVAEConfig:
        """Small widths for tests; the same names and strides as the released checkpoint."""
        return cls(widths=(16, 8, 8, 8), encoder_width=8)

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> TinyVAEConfig:
        """The widths a checkpoint was made with, from its convolutions' shapes."""
        try:
            widths = tuple(shapes[f"decoder.{i}.weight"][0] for i in _DECODER_WIDTH_CONVS)
            latent = shapes[f"decoder.{_DECODER_WIDTH_CONVS[0]}.weight"][1]
            encoder = shapes[f"encoder.{_ENCODER_WIDTH_CONV}.weight"][0]
        except (KeyError, IndexError) as exc:
            raise ValueError(f"not a tiny Wan2.1 autoencoder checkpoint: no tensor {exc}") from None
        return cls(latent_channels=latent, widths=widths, encoder_width=encoder)  # type: ignore[arg-type]


def _conv(n_in: int, n_out: int, *, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias, stride=stride)


class SoftClamp(nn.Module):
    """Squashes latents smoothly into (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3.0) * 3.0


class MemoryBlock(nn.Module):
    """Residual conv block over a frame and the frame before it (``past``)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        # Indices matter: they are the checkpoint's names (conv.0, .2, .4).
        self.conv = nn.Sequential(
            _conv(2 * n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip: nn.Module = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + self.skip(x))


class TimePool(nn.Module):
    """Merges `stride` consecutive frames into one (encoder only; kept for its weights)."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(dim * stride, dim, 1, bias=False)


class TimeGrow(nn.Module):
    """Turns each frame into `stride` frames: output channel group k is frame k."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(dim, dim * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Frames are the batch axis, each batch element's frames in order: [(b t), c, h, w].
        grown = self.conv(x)
        return grown.reshape(-1, grown.shape[1] // self.stride, *grown.shape[2:])


def _encoder(cfg: TinyVAEConfig) -> nn.Sequential:
    e = cfg.encoder_width
    layers: list[nn.Module] = [_conv(3, e), nn.ReLU()]
    for halve in cfg.time_downscale:
        layers += [TimePool(e, 2 if halve else 1), _conv(e, e, bias=False, stride=2)]
        layers += [MemoryBlock(e, e) for _ in range(3)]
    layers.append(_conv(e, cfg.latent_channels))
    return nn.Sequential(*layers)


def _decoder(cfg: TinyVAEConfig) -> nn.Sequential:
    w = cfg.widths
    layers: list[nn.Module] = [SoftClamp(), _conv(cfg.latent_channels, w[0]), nn.ReLU()]
    for stage, double in enumerate(cfg.time_upscale):
        layers += [MemoryBlock(w[stage], w[stage]) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2.0), TimeGrow(w[stage], 2 if double else 1)]
        layers.append(_conv(w[stage], w[stage + 1], bias=False))
    layers += [nn.ReLU(), _conv(w[3], 3)]
    return nn.Sequential(*layers)


#: What a decode stream remembers: per memory block (by decoder index), its last input frame.
TinyStreamState = dict[int, torch.Tensor]


class TinyVAE(nn.Module):
    """The tiny autoencoder; parameter names are those of ``taew2_1.pth``."""

    def __init__(self, cfg: TinyVAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or TinyVAEConfig()
        self.encoder = _encoder(self.cfg)
        self.decoder = _decoder(self.cfg)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, 16, T, h, w] -> video [B, 3, 4T - 3, 8h, 8w] in [-1, 1]
        (float32), the whole clip in one pass."""
        return self.decode_stream().decode(latents)

    def decode_frames(self, latents: torch.Tensor, state: TinyStreamState | None) -> torch.Tensor:
        """Latents [B, C, T, h, w] -> every decoded frame [B, 3, 4T, 8h, 8w] in [-1, 1], no
        trimming. With `state`, memory blocks continue from (and update) the previous call."""
        b = latents.shape[0]
        x = latents.to(self.dtype).transpose(1, 2).flatten(0, 1)  # [(b t), c, h, w]
        for index, layer in enumerate(self.decoder):
            if isinstance(layer, MemoryBlock):
                frames = x.unflatten(0, (b, -1))
                before = state.get(index) if state is not None else None
                if before is None:
                    before = torch.zeros_like(frames[:, :1])
                past = torch.cat([before, frames[:, :-1]], dim=1).flatten(0, 1)
                if state is not None:
                    state[index] = frames[:, -1:].clone()
                x = layer(x, past)
            elif isinstance(layer, nn.Upsample):
                continue  # applied after the next TimeGrow (see below)
            elif isinstance(layer, TimeGrow):
                # Nearest upsampling and a 1x1 convolution commute: grow time first, at a
                # quarter of the pixels, then upsample.
                x = F.interpolate(layer(x), scale_factor=2.0, mode="nearest")
            else:
                x = layer(x)
        video = x.unflatten(0, (b, -1)).transpose(1, 2).float()  # [b, 3, frames, H, W]
        return video.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)

    def decode_stream(self) -> TinyDecodeStream:
        return TinyDecodeStream(self)


class TinyDecodeStream:
    """Causal block-by-block decoding of one latent stream; equals `TinyVAE.decode` of the
    concatenated latents. The first block of T latents gives 4T - 3 frames, later ones 4T:
    the same counts as the full VAE's `DecodeStream`."""

    def __init__(self, vae: TinyVAE) -> None:
        self.vae = vae
        self.state: TinyStreamState = {}
        self.latents_decoded = 0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        video = self.vae.decode_frames(latents, self.state)
        if self.latents_decoded == 0:
            video = video[:, :, self.vae.cfg.frames_to_trim :]
        self.latents_decoded += latents.shape[2]
        return video

    def reset(self) -> None:
        self.state.clear()
        self.latents_decoded = 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state.values())


def tiny_vae_parameter_shapes(cfg: TinyVAEConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tiny autoencoder's parameters, built on the meta device."""
    with torch.device("meta"):
        model = TinyVAE(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def adapt_time_grow(shapes: Mapping[str, tuple[int, ...]], cfg: TinyVAEConfig) -> dict[str, int]:
    """Time-grow weights stored for more frames than this decoder makes (a checkpoint exported
    with that stage's time upscaling on, where Wan2.1 has it off): name -> output channels to
    keep. The last frame's channels are kept, as the design's own loader does."""
    with torch.device("meta"):
        decoder = _decoder(cfg)
    keep = {}
    for index, layer in enumerate(decoder):
        if not isinstance(layer, TimeGrow):
            continue
        name = f"decoder.{index}.conv.weight"
        want, got = tuple(layer.conv.weight.shape), shapes.get(name)
        if got is not None and len(got) == 4 and got[1:] == want[1:] and got[0] > want[0] and got[0] % want[0] == 0:
            keep[name] = want[0]
    return keep
