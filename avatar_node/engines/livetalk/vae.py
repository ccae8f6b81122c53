"""The Wan2.1 causal video VAE: encode the reference image, decode latent blocks as they come.

The module tree mirrors the released ``Wan2.1_VAE.pth`` so its state dict loads strictly by
its own names (``encoder.*``, ``conv1``, ``conv2``, ``decoder.*``). Facts from the public
Wan2.1 code that this file restates:

* Every 3-D convolution is causal in time: 2 frames of history in front (zeros at the
  start of a stream), zero padding in space. Norms are RMS norms over channels scaled by
  sqrt(channels) with a learned gain. Attention blocks are single-head and per frame.
* Time is compressed 4x by two temporal stages. Both treat the first frame of a stream on
  its own: the encoder passes it through and halves time over the rest; the decoder passes
  it through and doubles time over the rest. So video frames 1 + 4k <-> latent frames 1 + k,
  latent 0 <-> frame 0, latent j >= 1 <-> frames 4j-3 .. 4j.
* The latent is normalised per channel: z = (mu - mean) / std with Wan2.1's fixed
  constants; encode keeps the posterior mean only; decode clamps to [-1, 1].

Decoding keeps, per causal convolution, the last input frames it needs (`DecodeStream`).
Decoding block by block with that state therefore equals decoding the whole clip in one
pass (`WanVAE.decode`), and nothing already decoded is decoded again.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig

#: Wan2.1's per-channel latent statistics.
LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

#: What a module remembers between calls of one stream, keyed by the module itself.
StreamCache = dict[nn.Module, torch.Tensor]


class CausalConv3d(nn.Conv3d):
    """A 3-D convolution that only looks back in time.

    With a `cache`, the frames of history are those the previous call saw last; without
    one (or on a stream's first call) they are zeros. Built with a symmetric `padding`
    like the release; the temporal part becomes 2 * padding frames of history in front.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel: int | tuple[int, int, int],
        padding: int | tuple[int, int, int] = 0,
        stride: int | tuple[int, int, int] = 1,
    ) -> None:
        super().__init__(in_dim, out_dim, kernel, stride=stride, padding=0)
        pad = (padding,) * 3 if isinstance(padding, int) else padding
        self.history = 2 * pad[0]
        self.spatial_pad = (pad[2], pad[2], pad[1], pad[1])

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:  # type: ignore[override]
        if self.history:
            past = cache.get(self) if cache is not None else None
            if past is None:
                past = x.new_zeros(x.shape[:2] + (self.history,) + x.shape[3:])
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                cache[self] = x[:, :, -self.history :].clone()
        if any(self.spatial_pad):
            x = F.pad(x, self.spatial_pad + (0, 0))
        return super().forward(x)


class RMSNorm(nn.Module):
    """L2 norm over channels (dim 1) times sqrt(channels) and a gain: ``gamma`` [C, 1, 1(, 1)]."""

    def __init__(self, dim: int, frames: bool) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1, 1) if frames else (dim, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Indices matter: they are the checkpoint's names (residual.0, .2, .3, .6).
        self.residual = nn.Sequential(
            RMSNorm(in_dim, frames=True),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, frames=True),
            nn.SiLU(),
            nn.Identity(),  # dropout in training
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut: nn.Module = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        skip = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + skip


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, frames=False)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames)).reshape(b * t, 3, c, h * w).transpose(-1, -2)  # [bt, 3, hw, c]
        out = F.scaled_dot_product_attention(qkv[:, 0:1], qkv[:, 1:2], qkv[:, 2:3])[:, 0]
        out = self.proj(out.transpose(-1, -2).reshape(b * t, c, h, w))
        return x + out.reshape(b, t, c, h, w).transpose(1, 2)


class Resample(nn.Module):
    """Halve or double the picture size, and for the "3d" modes also time (see module notes)."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1)
            )
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode.startswith("down"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def forward(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_time(x, cache)
        b, c, t = x.shape[:3]
        frames = x.transpose(1, 2).flatten(0, 1)
        if self.mode.startswith("up"):  # nearest upsampling in float32, as released (bf16 safe)
            frames = self.resample[1](self.resample[0](frames.float()).to(frames.dtype))
        else:
            frames = self.resample(frames)
        x = frames.unflatten(0, (b, t)).transpose(1, 2)
        if self.mode == "downsample3d":
            x = self._halve_time(x, cache)
        return x

    def _double_time(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        first = cache is None or self not in cache
        head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (x[:, :, :0], x)
        if first and cache is not None:
            # Marks the stream as started; the time convolution keeps its own history.
            cache[self] = x.new_zeros(())
        if rest.shape[2] == 0:
            return head
        doubled = self.time_conv(rest, cache)  # [b, 2c, t, h, w]: channel half k is output frame 2t + k
        b, c2, t, h, w = doubled.shape
        doubled = doubled.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)
        return torch.cat([head, doubled], dim=2)

    def _halve_time(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        # The first frame of a stream passes through; then each pair of new frames is
        # convolved with the frame before it (stride 2, kernel 3, no padding).
        key = self.time_conv
        first = cache is None or key not in cache
        if first:
            head, context = x[:, :, :1], x
        else:
            assert cache is not None
            head, context = x[:, :, :0], torch.cat([cache[key], x], dim=2)
        if cache is not None:
            cache[key] = x[:, :, -1:].clone()
        if context.shape[2] < 3:
            return head
        return torch.cat([head, nn.Conv3d.forward(self.time_conv, context)], dim=2)


def _stage_dims(cfg: VAEConfig) -> list[int]:
    return [cfg.dim * m for m in (1, *cfg.dim_mult)]


class Encoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = _stage_dims(cfg)
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        stages = len(cfg.dim_mult)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != stages - 1:
                layers.append(Resample(out_dim, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        width = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(width, width), AttentionBlock(width), ResidualBlock(width, width))
        self.head = nn.Sequential(
            RMSNorm(width, frames=True), nn.SiLU(), CausalConv3d(width, cfg.z_dim * 2, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        return self.head[2](self.head[1](self.head[0](x)), cache)


class Decoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        mults = list(cfg.dim_mult)
        dims = [cfg.dim * m for m in [mults[-1]] + mults[::-1]]
        temporal_upsample = cfg.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0])
        )
        layers: list[nn.Module] = []
        stages = len(mults)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous upsampling conv halved the channels
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != stages - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1], frames=True), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in (*self.middle, *self.upsamples):
            x = layer(x, cache)
        return self.head[2](self.head[1](self.head[0](x)), cache)


class WanVAE(nn.Module):
    """The Wan2.1 VAE; parameter names are those of ``Wan2.1_VAE.pth``."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor

    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or VAEConfig()
        self.cfg = cfg
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        self.register_buffer(
            "latent_mean", torch.tensor(LATENT_MEAN[: cfg.z_dim]).view(1, -1, 1, 1, 1), persistent=False
        )
        self.register_buffer("latent_std", torch.tensor(LATENT_STD[: cfg.z_dim]).view(1, -1, 1, 1, 1), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, 1 + 4k, H, W] (or an image [B, 3, H, W]) in [-1, 1] -> normalised
        posterior mean [B, 16, 1 + k, H/8, W/8] (float32)."""
        if video.ndim == 4:
            video = video[:, :, None]
        frames = video.shape[2]
        stride = self.cfg.temporal_stride
        if (frames - 1) % stride:
            raise ValueError(f"a video to encode has 1 + {stride}k frames, got {frames}")
        # Encoded in the release's chunks (1, then 4 at a time) so memory stays bounded.
        cache: StreamCache = {}
        x = video.to(self.dtype)
        chunks = [x[:, :, :1]] + (list(x[:, :, 1:].split(stride, dim=2)) if frames > 1 else [])
        out = torch.cat([self.encoder(chunk, cache) for chunk in chunks], dim=2)
        mu = self.conv1(out).chunk(2, dim=1)[0].float()
        return (mu - self.latent_mean) / self.latent_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, 16, T, h, w] -> video [B, 3, 1 + 4(T-1), 8h, 8w] in [-1, 1]
        (float32), the whole clip in one pass."""
        return self.decode_cached(latents, None)

    def decode_cached(self, latents: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        z = latents.float() * self.latent_std + self.latent_mean
        x = self.conv2(z.to(self.dtype))
        return self.decoder(x, cache).float().clamp_(-1.0, 1.0)

    def decode_stream(self) -> DecodeStream:
        return DecodeStream(self)


class DecodeStream:
    """Causal block-by-block decoding of one latent stream; equals `WanVAE.decode` of the
    concatenated latents. The first block of T latents gives 1 + 4(T-1) frames, later ones 4T."""

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        self.cache: StreamCache = {}
        self.latents_decoded = 0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        # One latent frame at a time, as the release decodes: the same frames (the cache
        # carries the causal context), with a third of a block's transient memory.
        out = [self.vae.decode_cached(latent, self.cache) for latent in latents.split(1, dim=2)]
        self.latents_decoded += latents.shape[2]
        return torch.cat(out, dim=2)

    def reset(self) -> None:
        self.cache.clear()
        self.latents_decoded = 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.cache.values())


def vae_parameter_shapes(cfg: VAEConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the VAE's parameters, built on the meta device."""
    with torch.device("meta"):
        model = WanVAE(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def load_vae(
    path: Path | str,
    cfg: VAEConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> WanVAE:
    """Build the VAE and load ``Wan2.1_VAE.pth`` into it strictly, by the checkpoint's own names.

    Raises ValueError naming every missing, unexpected or mis-shaped tensor.
    """
    from .checkpoints import load_checkpoint

    state = load_checkpoint(Path(path))
    with torch.device("meta"):
        model = WanVAE(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{n} is {list(state[n].shape)}, expected {list(s)}"
        for n, s in expected.items()
        if n in state and tuple(state[n].shape) != s
    )
    if missing or unexpected or wrong:
        lines = (
            [f"missing: {n}" for n in missing]
            + [f"unexpected: {n}" for n in unexpected]
            + [f"wrong shape: {w}" for w in wrong]
        )
        shown = "\n  ".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
        raise ValueError(f"{path} does not match the Wan2.1 VAE:\n  {shown}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    # Buffers built on the meta device are not in the checkpoint: make them real.
    model.latent_mean = torch.tensor(LATENT_MEAN[: model.cfg.z_dim]).view(1, -1, 1, 1, 1)
    model.latent_std = torch.tensor(LATENT_STD[: model.cfg.z_dim]).view(1, -1, 1, 1, 1)
    return model.to(device).eval().requires_grad_(False)
