"""Block-causal streaming: cache vs offline, causality, sinks, positions, batching."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from avatar_node.engines.livetalk.config import DiTConfig, StreamConfig  # noqa: E402
from avatar_node.engines.livetalk.model import PromptConditioning  # noqa: E402
from avatar_node.engines.livetalk.sampler import (  # noqa: E402
    BlockSampler,
    FlowSchedule,
    offline_block_pass,
    reference_condition,
)
from avatar_node.engines.livetalk.window import block_view  # noqa: E402

from .conftest import LATENT_HW, audio_for, make_model, open_session  # noqa: E402

# A small window so a handful of blocks already evicts: 2 sink frames, 7-frame window.
SMALL_WINDOW = dict(frames_per_block=3, window_frames=7, sink_frames=2)


def run_stream(sampler, session, blocks, audio_seed=0, noise=None):
    """Sample `blocks` blocks for one session; returns latents [16, frames, H, W] and the noise used."""
    outs, used = [], []
    for b in range(blocks):
        n = sampler.draw_noise(session) if noise is None else noise[b]
        used.append(n)
        audio = audio_for(sampler.model.cfg, 1, sampler.stream, audio_seed * 1000 + b)
        outs.append(sampler.step([session], audio, n[None])[0])
    return torch.cat(outs, dim=1), used


def test_release_schedule():
    schedule = FlowSchedule.few_step(4, 5.0)
    assert schedule.timesteps == (1000.0, 936.0, 832.0, 624.0)
    assert schedule.sigmas == pytest.approx((1.0, 0.9375, 0.833333, 0.625), abs=1e-5)


@pytest.mark.parametrize("positions", ["absolute", "window"])
def test_streaming_equals_offline_pass(positions):
    model = make_model()
    stream = StreamConfig(positions=positions, **SMALL_WINDOW)
    sampler = BlockSampler(model, stream)
    session = open_session(sampler, seed=3)
    blocks = 5  # 15 frames: the 7-frame window rolls 3 times
    streamed, noise = run_stream(sampler, session, blocks)

    # Offline: for each denoising step, one forward over all blocks at once, no cache.
    cfg, per_block = model.cfg, stream.frames_per_block
    frames = blocks * per_block
    noise = torch.stack(noise)  # [blocks, steps, 16, per_block, H, W]
    step_noise = noise.permute(1, 2, 0, 3, 4, 5).flatten(2, 3)  # [steps, 16, frames, H, W]
    condition = reference_condition(session.reference, frames, True)[None]
    audio = torch.cat([audio_for(cfg, 1, stream, b) for b in range(blocks)], dim=1)
    packed = model.pack_audio(audio)
    schedule = sampler.schedule
    clean_context = streamed[None]
    latents = step_noise[0][None].clone()
    for i, (sigma, t) in enumerate(zip(schedule.sigmas, schedule.timesteps)):
        latents[:, :, 0] = session.reference
        _, flow = offline_block_pass(
            model, stream, clean_context, latents, torch.full((1, frames), t), condition, session.prompt, packed
        )
        estimate = latents - sigma * flow
        if i + 1 < len(schedule.sigmas):
            latents = (1 - schedule.sigmas[i + 1]) * estimate + schedule.sigmas[i + 1] * step_noise[i + 1][None]
    estimate[:, :, 0] = session.reference
    torch.testing.assert_close(estimate[0], streamed, rtol=1e-4, atol=1e-4)


def test_offline_pass_is_block_causal():
    """Changing the inputs of block k+1 leaves every output of blocks <= k unchanged."""
    model = make_model()
    stream = StreamConfig(**SMALL_WINDOW)
    cfg = model.cfg
    g = torch.Generator().manual_seed(5)
    frames, k = 12, 2  # blocks 0..3; perturb block k + 1 = 3
    clean = torch.randn((1, 16, frames, *LATENT_HW), generator=g)
    noisy = torch.randn((1, 16, frames, *LATENT_HW), generator=g)
    audio = model.pack_audio(torch.randn((1, frames, 4, cfg.audio_feature_dim), generator=g))
    prompt = model.encode_prompt(torch.randn((4, cfg.text_dim), generator=g))
    condition = reference_condition(clean[0, :, 0], frames, True)[None]
    t = torch.full((1, frames), 832.0)
    base = offline_block_pass(model, stream, clean, noisy, t, condition, prompt, audio)

    late = slice((k + 1) * 3, None)
    clean2, noisy2, audio2 = clean.clone(), noisy.clone(), audio.clone()
    clean2[:, :, late] += 1.0
    noisy2[:, :, late] += 1.0
    audio2[:, late] += 1.0
    moved = offline_block_pass(model, stream, clean2, noisy2, t, condition, prompt, audio2)
    for before, after in zip(base, moved):
        torch.testing.assert_close(after[:, :, : (k + 1) * 3], before[:, :, : (k + 1) * 3], rtol=0, atol=1e-6)
        assert (after[:, :, late] - before[:, :, late]).abs().max() > 1e-3


@pytest.mark.parametrize("what", ["audio", "noise"])
def test_streaming_is_causal(what):
    model = make_model()
    sampler = BlockSampler(model, StreamConfig(**SMALL_WINDOW))
    blocks, k = 4, 1
    first, noise = run_stream(sampler, open_session(sampler, seed=1), blocks)
    noise2 = [n.clone() for n in noise]
    audio_seed = 0
    if what == "noise":
        noise2[k + 1] = torch.randn_like(noise2[k + 1])
    else:
        audio_seed = 7  # every block's audio differs from here on; only block k+1's matters below

    session = open_session(sampler, seed=1)
    outs = []
    for b in range(blocks):
        seed = 0 * 1000 + b if (what == "noise" or b <= k) else audio_seed * 1000 + b
        audio = audio_for(model.cfg, 1, sampler.stream, seed)
        outs.append(sampler.step([session], audio, noise2[b][None])[0])
    second = torch.cat(outs, dim=1)
    upto = (k + 1) * 3
    torch.testing.assert_close(second[:, :upto], first[:, :upto], rtol=0, atol=0)
    assert (second[:, upto : upto + 3] - first[:, upto : upto + 3]).abs().max() > 1e-3


def test_sinks_survive_eviction_and_window_is_respected():
    model = make_model()
    stream = StreamConfig(**SMALL_WINDOW)
    sampler = BlockSampler(model, stream)
    session = open_session(sampler, seed=2)
    cache = session.cache
    per_frame = cache.tokens_per_frame
    sink_tokens = stream.sink_frames * per_frame
    sink_keys = sink_values = None
    for b in range(8):
        sampler.step([session], audio_for(model.cfg, 1, stream, b))
        if b == 0:
            sink_keys = cache.keys[:, :sink_tokens].clone()
            sink_values = cache.values[:, :sink_tokens].clone()
        # The cache holds exactly what the closed-form rule says the next block sees.
        view = block_view(stream, b + 1)
        assert cache.frames == list(view.context_frames)
        assert len(cache.frames) <= stream.cached_frames
        assert cache.positions() == (list(view.context_positions), list(view.block_positions))
    assert cache.frames[: stream.sink_frames] == [0, 1]
    # Sinks keep their position, so their stored (rotated) keys never change.
    torch.testing.assert_close(cache.keys[:, :sink_tokens], sink_keys, rtol=0, atol=0)
    torch.testing.assert_close(cache.values[:, :sink_tokens], sink_values, rtol=0, atol=0)


def test_release_window_layout():
    stream = StreamConfig()  # 3-frame blocks, 15-frame window, 9 sinks
    assert block_view(stream, 4).context_frames == tuple(range(12))
    steady = block_view(stream, 50)
    assert steady.context_frames == tuple(range(9)) + (147, 148, 149)
    # Window positions: every later block sees the layout block 4 saw.
    assert steady.context_positions == tuple(range(12))
    assert steady.block_positions == (12, 13, 14)
    absolute = block_view(StreamConfig(positions="absolute"), 50)
    assert absolute.block_positions == (150, 151, 152)


def test_cache_holds_one_copy_of_keys_and_values():
    """Memory is one K and one V buffer of `window_frames` frames per layer, nothing more."""
    model = make_model()
    stream = StreamConfig()
    sampler = BlockSampler(model, stream)
    session = open_session(sampler, seed=4)
    cfg, cache = model.cfg, session.cache
    per_buffer = cfg.num_layers * stream.window_frames * cache.tokens_per_frame * cfg.num_heads * cfg.head_dim * 4
    assert cache.nbytes == 2 * per_buffer
    assert not [name for name, value in vars(cache).items() if isinstance(value, torch.Tensor) and value.numel() > 1000 and name not in ("keys", "values")]


def test_batch_of_sessions_matches_separate_runs():
    model = make_model()
    stream = StreamConfig(**SMALL_WINDOW)
    sampler = BlockSampler(model, stream)
    # Three sessions at different points of their lives: 0, 1 and 3 blocks already done.
    head_start = [0, 1, 3]

    def prepared():
        sessions = [open_session(sampler, seed=10 + i) for i in range(3)]
        for i, s in enumerate(sessions):
            for b in range(head_start[i]):
                sampler.step([s], audio_for(model.cfg, 1, stream, 100 * i + b))
        return sessions

    separate_sessions, batched_sessions = prepared(), prepared()
    for block in range(3):
        audio = torch.cat([audio_for(model.cfg, 1, stream, 7000 + 10 * i + block) for i in range(3)])
        batched = sampler.step(batched_sessions, audio)
        separate = torch.cat([sampler.step([s], audio[i : i + 1]) for i, s in enumerate(separate_sessions)])
        torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-5)
        assert (batched[0] - batched[1]).abs().max() > 1e-2  # the sessions really differ


def test_prompt_conditioning_is_per_session():
    model = make_model()
    cfg = model.cfg
    a = model.encode_prompt(torch.randn(3, cfg.text_dim))
    b = model.encode_prompt(torch.randn(cfg.text_len, cfg.text_dim))
    both = PromptConditioning.stack([a, b])
    assert both.keys.shape == (cfg.num_layers, 2, cfg.text_len, cfg.num_heads, cfg.head_dim)
    with pytest.raises(ValueError, match="at most"):
        model.encode_prompt(torch.randn(cfg.text_len + 1, cfg.text_dim))


def test_runs_for_hours_past_the_release_position_table():
    """A session whose timeline jumps far past the release's 1024 frames (a live session
    skipping time does this; so does one running for hours): no error, finite and
    statistically stable output, constant cache memory, positions bounded by the window."""
    cfg = DiTConfig.tiny(dim=24, ffn_dim=32, num_heads=2, num_layers=3, text_len=4, freq_dim=8, audio_feature_dim=4)
    model = make_model(cfg)
    stream = StreamConfig()  # the release's window: 9 sinks, 15 frames
    sampler = BlockSampler(model, stream)
    g = torch.Generator().manual_seed(0)
    session = sampler.open_session(torch.randn((16, 2, 2), generator=g), torch.randn((4, cfg.text_dim), generator=g))
    stds, nbytes = [], session.cache.nbytes
    # 40 consecutive blocks, then 40 more after jumping to frame 3000, then 40 after frame 100000.
    starts = [3 * b for b in range(40)] + [3000 + 3 * b for b in range(40)] + [100_000 + 3 * b for b in range(40)]
    for first in starts:
        out = sampler.step([session], torch.randn((1, 3, 4, cfg.audio_feature_dim), generator=g), first_frames=[first])
        assert torch.isfinite(out).all()
        stds.append(out.std().item())
        assert session.cache.nbytes == nbytes
        assert len(session.cache.frames) <= stream.cached_frames
        assert max(max(session.cache.positions()[1]), *session.cache.rotated_to) < stream.window_frames
    assert session.cache.next_frame == 100_000 + 3 * 40
    assert session.cache.frames[: stream.sink_frames] == list(range(9))  # the first frames stay as sinks
    early = torch.tensor(stds[10:40])
    late = torch.tensor(stds[-30:])
    assert abs(late.mean() / early.mean() - 1) < 0.2
    assert late.std() < 0.5 * late.mean()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_tracks_fp32(dtype):
    model = make_model()
    stream = StreamConfig(**SMALL_WINDOW)
    full = BlockSampler(model, stream)
    half = BlockSampler(make_model().to(dtype), stream)
    a, b = open_session(full, seed=6), open_session(half, seed=6)
    for block in range(4):
        noise = full.draw_noise(a)[None]
        audio = audio_for(model.cfg, 1, stream, block)
        x, y = full.step([a], audio, noise), half.step([b], audio, noise)
        assert y.dtype == torch.float32
        assert (x - y).norm() / x.norm() < 0.05
