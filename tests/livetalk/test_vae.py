"""Wan2.1 VAE: strict loading by the checkpoint's names, cached block decoding == whole decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from avatar_node.engines.livetalk.config import VAEConfig  # noqa: E402
from avatar_node.engines.livetalk.vae import WanVAE, load_vae, vae_parameter_shapes  # noqa: E402

#: Names and shapes of the released Wan2.1_VAE.pth, read from the public Wan2.1 code.
RELEASE_SAMPLE = {
    "encoder.conv1.weight": (96, 3, 3, 3, 3),
    "encoder.downsamples.0.residual.0.gamma": (96, 1, 1, 1),
    "encoder.downsamples.3.shortcut.weight": (192, 96, 1, 1, 1),
    "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1),
    "encoder.middle.1.norm.gamma": (384, 1, 1),
    "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
    "encoder.head.0.gamma": (384, 1, 1, 1),
    "encoder.head.2.weight": (32, 384, 3, 3, 3),
    "conv1.weight": (32, 32, 1, 1, 1),
    "conv2.weight": (16, 16, 1, 1, 1),
    "decoder.conv1.weight": (384, 16, 3, 3, 3),
    "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
    "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
    "decoder.upsamples.4.shortcut.weight": (384, 192, 1, 1, 1),
    "decoder.upsamples.11.resample.1.weight": (96, 192, 3, 3),
    "decoder.upsamples.14.residual.6.weight": (96, 96, 3, 3, 3),
    "decoder.head.2.weight": (3, 96, 3, 3, 3),
}


def random_vae(seed: int = 0) -> WanVAE:
    torch.manual_seed(seed)
    vae = WanVAE(VAEConfig.tiny()).eval()
    with torch.no_grad():  # non-trivial gains and biases, so every path shows
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.normal_(1.0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return vae


def test_full_size_names_match_the_release():
    shapes = vae_parameter_shapes()
    assert len(shapes) == 194
    assert sum(torch.Size(s).numel() for s in shapes.values()) == pytest.approx(126.9e6, rel=1e-3)
    for name, shape in RELEASE_SAMPLE.items():
        assert shapes[name] == shape, name


@pytest.mark.parametrize("blocks", [[3, 3, 3], [1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 3, 2, 3]], ids=["blocks-of-3", "one-by-one", "uneven"])
def test_cached_block_decoding_equals_whole_decoding(blocks):
    vae = random_vae()
    latents = torch.randn(1, 16, sum(blocks), 4, 4, generator=torch.Generator().manual_seed(1))
    whole = vae.decode(latents)
    assert whole.shape == (1, 3, 1 + 4 * (sum(blocks) - 1), 32, 32)
    stream = vae.decode_stream()
    parts, start = [], 0
    for n in blocks:
        parts.append(stream.decode(latents[:, :, start : start + n]))
        start += n
    assert [p.shape[2] for p in parts] == [1 + 4 * (blocks[0] - 1)] + [4 * n for n in blocks[1:]]
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, rtol=1e-4, atol=1e-4)
    # The cache is what makes it equal: a later block decoded on its own is different.
    alone = vae.decode(latents[:, :, -blocks[-1] :])[:, :, -4 * blocks[-1] + 1 :]
    assert (alone - whole[:, :, -alone.shape[2] :]).abs().max() > 1e-2


def test_encode_image_and_video():
    vae = random_vae()
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    latent = vae.encode(image)
    assert latent.shape == (2, 16, 1, 4, 4) and latent.dtype == torch.float32
    video = torch.cat([image[:, :, None], torch.rand(2, 3, 4, 32, 32) * 2 - 1], dim=2)
    both = vae.encode(video)
    assert both.shape == (2, 16, 2, 4, 4)
    torch.testing.assert_close(both[:, :, :1], latent, rtol=1e-5, atol=1e-5)  # causal: frame 0 alone
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(torch.zeros(1, 3, 3, 32, 32))


def test_strict_load_by_the_checkpoint_names(tmp_path: Path):
    vae = random_vae(3)
    path = tmp_path / "Wan2.1_VAE.pth"
    state = vae.state_dict()
    torch.save(state, path)
    loaded = load_vae(path, VAEConfig.tiny())
    latents = torch.randn(1, 16, 3, 4, 4)
    torch.testing.assert_close(loaded.decode(latents), vae.decode(latents), rtol=0, atol=0)

    broken = dict(state)
    broken["decoder.middle.1.proj.weightx"] = broken.pop("decoder.middle.1.proj.weight")
    broken["encoder.head.2.bias"] = torch.zeros(7)
    torch.save(broken, path)
    with pytest.raises(ValueError) as info:
        load_vae(path, VAEConfig.tiny())
    message = str(info.value)
    assert "missing: decoder.middle.1.proj.weight" in message
    assert "unexpected: decoder.middle.1.proj.weightx" in message
    assert "wrong shape: encoder.head.2.bias is [7], expected [32]" in message
    # A checkpoint of another width is refused, not silently partly loaded.
    torch.save(state, path)
    with pytest.raises(ValueError, match="wrong shape"):
        load_vae(path, VAEConfig(dim=16))
