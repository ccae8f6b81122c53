"""The tiny VAE decoder: the released checkpoint's names load strictly, block-by-block decoding
equals whole-clip decoding with the full VAE's frame counts, the engine serves with it, and
check-weights and `serve --vae` report its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from avatar_node import cli  # noqa: E402
from avatar_node.engines.base import Conditioning, StreamOptions  # noqa: E402
from avatar_node.engines.livetalk import check_weights  # noqa: E402
from avatar_node.engines.livetalk.config import VAEConfig  # noqa: E402
from avatar_node.engines.livetalk.engine import LiveTalkEngine  # noqa: E402
from avatar_node.engines.livetalk.vae import WanVAE  # noqa: E402
from avatar_node.engines.livetalk.vae_tiny import (  # noqa: E402
    TinyDecodeStream,
    TinyVAE,
    TinyVAEConfig,
    tiny_vae_parameter_shapes,
)
from avatar_node.engines.livetalk.weights import TINY_VAE_FILE, load_tiny_vae  # noqa: E402

PORTRAIT = Path(__file__).resolve().parents[2] / "avatar_node" / "assets" / "sample_portrait.jpg"


def tiny_vae(seed: int = 0) -> TinyVAE:
    torch.manual_seed(seed)
    return TinyVAE(TinyVAEConfig.tiny()).eval()


def latents(frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn((1, 16, frames, 4, 4), generator=torch.Generator().manual_seed(seed))


def tiny_report(root: Path, capsys) -> tuple[int, dict]:
    rc = check_weights.main([str(root), "--json"])
    reports = json.loads(capsys.readouterr().out)
    return rc, next(r for r in reports if r["component"].startswith("tiny VAE decoder"))


# -- the checkpoint ------------------------------------------------------------------------


def test_released_names_and_shapes():
    """A few names and shapes of taew2_1.pth: indices of a flat layer list, parameter-free
    layers (clamp, ReLU, upsampling) included; the first time-grow makes one frame."""
    shapes = tiny_vae_parameter_shapes()
    assert len(shapes) == 128
    assert shapes["decoder.1.weight"] == (256, 16, 3, 3)
    assert shapes["decoder.3.conv.0.weight"] == (256, 512, 3, 3)
    assert shapes["decoder.7.conv.weight"] == (256, 256, 1, 1)
    assert shapes["decoder.13.conv.weight"] == (256, 128, 1, 1)
    assert shapes["decoder.19.conv.weight"] == (128, 64, 1, 1)
    assert shapes["decoder.22.bias"] == (3,)
    assert shapes["encoder.2.conv.weight"] == (64, 128, 1, 1)
    assert shapes["encoder.12.conv.weight"] == (64, 64, 1, 1)
    assert shapes["encoder.17.weight"] == (16, 64, 3, 3)
    assert "decoder.3.skip.weight" not in shapes  # equal widths: no skip convolution


def test_loads_strictly_by_name_and_widths_come_from_the_file(tmp_path: Path):
    model = tiny_vae()
    path = tmp_path / "taew2_1.pth"
    torch.save(model.state_dict(), path)
    loaded = load_tiny_vae(path)
    assert loaded.cfg == TinyVAEConfig.tiny()
    z = latents(3)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)

    state = model.state_dict()
    state["decoder.3.conv.1.weight"] = state.pop("decoder.3.conv.0.weight")  # a renamed key
    torch.save(state, path)
    with pytest.raises(ValueError, match="cannot load the tiny VAE decoder") as exc:
        load_tiny_vae(path)
    assert "missing: decoder.3.conv.0.weight" in str(exc.value)
    assert "unexpected: decoder.3.conv.1.weight" in str(exc.value)


def test_a_decoder_for_other_latents_is_refused(tmp_path: Path):
    path = tmp_path / "taew2_1.pth"
    torch.save(TinyVAE(TinyVAEConfig(latent_channels=48, widths=(16, 8, 8, 8), encoder_width=8)).state_dict(), path)
    with pytest.raises(ValueError, match="48-channel latents"):
        load_tiny_vae(path)


def test_a_wider_first_time_grow_keeps_its_last_frame(tmp_path: Path):
    """A checkpoint whose first time-grow was exported for two frames loads; the decoder
    keeps the channels of the later frame."""
    model = tiny_vae()
    state = model.state_dict()
    kept = state["decoder.7.conv.weight"]
    state["decoder.7.conv.weight"] = torch.cat([torch.randn_like(kept), kept])
    path = tmp_path / "taew2_1.pth"
    torch.save(state, path)
    z = latents(2)
    torch.testing.assert_close(load_tiny_vae(path).decode(z), model.decode(z), rtol=0, atol=0)


# -- decoding -----------------------------------------------------------------------------------


def test_block_by_block_equals_whole_clip_with_the_full_vaes_frame_counts():
    model = tiny_vae()
    z = latents(9)
    whole = model.decode(z)
    assert whole.shape == (1, 3, 33, 32, 32)
    assert whole.shape[2] == WanVAE(VAEConfig.tiny()).decode(z).shape[2]  # 4T - 3, as Wan2.1
    assert whole.abs().max() <= 1.0 and whole.std() > 0

    stream = model.decode_stream()
    assert isinstance(stream, TinyDecodeStream)
    for _ in range(2):  # reset() starts a new stream
        blocks = [stream.decode(z[:, :, i : i + 3]) for i in range(0, 9, 3)]
        assert [b.shape[2] for b in blocks] == [9, 12, 12]
        torch.testing.assert_close(torch.cat(blocks, dim=2), whole, rtol=0, atol=1e-6)
        assert stream.nbytes > 0
        stream.reset()
        assert stream.nbytes == 0


def test_the_latents_go_in_as_the_dit_makes_them():
    """No Wan2.1 mean/std undone before the tiny decoder: it was trained on normalised latents."""
    model = tiny_vae()
    seen = []
    model.decoder[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    z = latents(3)
    model.decode(z)
    torch.testing.assert_close(seen[0], z[0].transpose(0, 1))


def test_a_frame_depends_on_earlier_latents_only():
    model = tiny_vae()
    z = latents(6)
    changed = z.clone()
    changed[:, :, 4] += 1.0
    a, b = model.decode(z), model.decode(changed)
    first_touched = 1 + 4 * 3  # latent 4 gives frames 13..16
    torch.testing.assert_close(a[:, :, :first_touched], b[:, :, :first_touched], rtol=0, atol=0)
    assert not torch.equal(a[:, :, first_touched:], b[:, :, first_touched:])


# -- the engine, check-weights and the command line ---------------------------------------------


def test_engine_serves_a_session_with_the_tiny_decoder(tiny_weights: Path):
    engine = LiveTalkEngine(tiny_weights, device="cpu", vae="tiny")
    try:
        assert isinstance(engine.decode_vae, TinyVAE) and isinstance(engine.vae, WanVAE)
        identity = engine.prepare(PORTRAIT.read_bytes())
        stream = engine.open(identity, StreamOptions(width=64, height=48, fps=16, seed=1))
        assert isinstance(stream.decoder, TinyDecodeStream)
        index, sizes = 0, []
        for _ in range(2):
            frames = stream.next_step_frames()
            span = frames * 1000 + engine.info.audio_lookahead_ms * 16
            out = stream.step(
                Conditioning(
                    speech=np.zeros(span, np.float32),
                    speaking=[False] * frames,
                    listen=np.zeros(span, np.float32),
                    frame_index=index,
                )
            )
            assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in out)
            sizes.append(len(out))
            index += len(out)
        assert sizes == [9, 12]
        stream.close()
    finally:
        engine.close()


def test_tiny_without_its_file_is_a_clear_error(tiny_weights_copy: Path, capsys):
    (tiny_weights_copy / TINY_VAE_FILE).unlink()
    with pytest.raises(ValueError, match=r"taew2_1\.pth.*madebyollin/taehv"):
        LiveTalkEngine(tiny_weights_copy, device="cpu", vae="tiny")
    with pytest.raises(ValueError, match="vae must be one of full, tiny, auto"):
        LiveTalkEngine(tiny_weights_copy, device="cpu", vae="small")

    rc = cli.main(
        ["serve", "--engine", "livetalk", "--weights", str(tiny_weights_copy), "--vae", "tiny", "--port", "0"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "taew2_1.pth" in err and "madebyollin/taehv" in err and "--vae full" in err


def test_check_weights_reports_the_optional_file(tiny_weights_copy: Path, capsys):
    root = tiny_weights_copy
    rc, report = tiny_report(root, capsys)
    assert rc == 0 and report["ok"] and report["found"]

    state = torch.load(root / TINY_VAE_FILE)
    state["decoder.1.weight"] = state["decoder.1.weight"][:, :8]
    torch.save(state, root / TINY_VAE_FILE)
    rc, report = tiny_report(root, capsys)
    assert rc == 1 and not report["ok"]
    assert "it decodes 8-channel latents, the DiT makes 16" in report["problems"][0]

    (root / TINY_VAE_FILE).unlink()
    rc, report = tiny_report(root, capsys)
    assert rc == 0 and report["ok"] and not report["found"]
    assert "madebyollin/taehv" in report["notes"][0]


def test_auto_takes_the_tiny_decoder_when_there_and_a_bad_unused_file_is_ignored(tiny_weights_copy: Path):
    root = tiny_weights_copy
    engine = LiveTalkEngine(root, device="cpu", vae="auto")
    assert engine.vae_kind == "tiny" and isinstance(engine.decode_vae, TinyVAE)
    engine.close()

    state = torch.load(root / TINY_VAE_FILE)
    del state["decoder.22.bias"]
    torch.save(state, root / TINY_VAE_FILE)
    with pytest.raises(ValueError, match="problems in: tiny VAE decoder"):
        LiveTalkEngine(root, device="cpu", vae="auto")
    engine = LiveTalkEngine(root, device="cpu")  # "full" never reads the file
    assert engine.vae_kind == "full" and engine.decode_vae is engine.vae
    engine.close()

    (root / TINY_VAE_FILE).unlink()
    engine = LiveTalkEngine(root, device="cpu", vae="auto")
    assert engine.vae_kind == "full"
    engine.close()
