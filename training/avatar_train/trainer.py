"""The training loop for both stages: optimizers, EMA, checkpoints that resume exactly,
TensorBoard logs, bf16 autocast, gradient checkpointing, data parallel processes.

Every random draw of a step comes from generators seeded by (seed, step, position in the
global batch), never from global state, so a resumed run repeats an uninterrupted one bit
for bit and N processes draw what one process would.

Stage "ode": the student regresses the teacher's trajectories (ode.py).
Stage "dmd": every step one critic update; every `critic_per_generator`-th step first one
generator update: a Self-Forcing rollout through the serving sampler (rollout.py), the DMD
gradient from the guided teacher and the critic (dmd.py), the first block masked; then the
generator's EMA (from `ema_start_step`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avatar_node.engines.livetalk.config import DiTConfig
from avatar_node.engines.livetalk.model import LiveTalkDiT
from avatar_node.engines.livetalk.sampler import BlockSampler
from avatar_node.engines.livetalk.vae import WanVAE, load_vae
from avatar_node.engines.livetalk.weights import VAE_FILE, load_model_config

from .batch import Batch, force_reference
from .config import OptimConfig, TrainConfig
from .dataset import ShardDataset, sample_generator, sample_index
from .distributed import Processes
from .dmd import critic_loss, dmd_loss, dmd_sigmas, frame_mask
from .ode import block_levels, ode_loss
from .rollout import exit_step, rollout
from .teacher import bidirectional_flow, guided_flow, load_teacher
from .trajectories import TrajectoryDataset

CHECKPOINTS = "checkpoints"
STUDENT_FILE = "student.safetensors"


@dataclass
class Inputs:
    """Where a run reads from."""

    data: Path
    #: The student's starting weights (stage 1: the merged 1.3B; stage 2: stage 1's output).
    init: Path
    #: Teacher trajectories (stage 1).
    trajectories: Path | None = None
    #: The real score (stage 2).
    teacher: Path | None = None
    #: The fake score's starting weights (stage 2); default: the teacher when its shape is
    #: the student's, else the student's init.
    critic: Path | None = None
    #: A livetalk weights directory whose VAE decodes the sample frames in the logs
    #: (without it the logs show latent previews).
    vae_weights: Path | None = None


@dataclass
class StepLog:
    step: int
    values: dict[str, float] = field(default_factory=dict)


def _adam(params: list[torch.nn.Parameter], o: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps)


def _trainable(path: Path, cfg: DiTConfig, device: torch.device) -> LiveTalkDiT:
    """A network to train: float32 weights (autocast computes in bf16 when asked)."""
    return load_teacher(path, cfg, device).train().requires_grad_(True)


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        inputs: Inputs,
        out: Path | str,
        *,
        device: str = "cpu",
        resume: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.device = torch.device(device)
        self.procs = Processes(self.device)
        self.log = log if self.procs.is_main else (lambda _: None)
        self.data = ShardDataset(inputs.data)
        if self.data.latent_frames != cfg.latent_frames:
            raise ValueError(
                f"{inputs.data} holds {self.data.latent_frames}-frame segments; the config asks for "
                f"{cfg.latent_frames} (preprocess again with --latent-frames {cfg.latent_frames})"
            )
        self.generator = _trainable(inputs.init, cfg.dit, self.device)
        self.generator.gradient_checkpointing = cfg.gradient_checkpointing
        self.teacher: LiveTalkDiT | None = None
        self.critic: LiveTalkDiT | None = None
        self.trajectories: TrajectoryDataset | None = None
        if cfg.stage == "ode":
            if inputs.trajectories is None:
                raise ValueError("stage 'ode' needs the teacher's trajectories (--trajectories)")
            self.trajectories = TrajectoryDataset(inputs.trajectories, self.data)
            self.optim = _adam(list(self.generator.parameters()), cfg.ode.optim)
            self.critic_optim: torch.optim.Optimizer | None = None
        else:
            if inputs.teacher is None:
                raise ValueError("stage 'dmd' needs the teacher (--teacher) for the real score")
            # Frozen: stored in bf16 when the run computes in bf16 (half the memory of a 14B teacher).
            dtype = torch.bfloat16 if cfg.bf16 else torch.float32
            self.teacher = load_teacher(inputs.teacher, cfg.teacher, self.device, dtype=dtype)
            if cfg.fsdp_teacher and self.procs.world > 1:
                from .sharding import shard_frozen, sharded_parameters

                shard_frozen(self.teacher, self.procs.world)
                self.log(
                    f"teacher sharded over {self.procs.world} processes: {sharded_parameters(self.teacher)} tensors"
                )
            critic_path = inputs.critic or (inputs.teacher if cfg.teacher == cfg.dit else inputs.init)
            self.critic = _trainable(critic_path, cfg.dit, self.device)
            self.critic.gradient_checkpointing = cfg.gradient_checkpointing
            self.optim = _adam(list(self.generator.parameters()), cfg.dmd.generator_optim)
            self.critic_optim = _adam(list(self.critic.parameters()), cfg.dmd.critic_optim)
        self.sampler = BlockSampler(self.generator, cfg.stream)
        self.ema: dict[str, torch.Tensor] | None = None
        self.step = 0
        self.writer = None
        #: The latest generated clip (for the sample images in the logs).
        self.last_sample: torch.Tensor | None = None
        self.vae: WanVAE | None = None
        if inputs.vae_weights is not None and self.procs.is_main:
            root = Path(inputs.vae_weights)
            self.vae = load_vae(root / VAE_FILE, load_model_config(root).vae, device=self.device)
        if resume:
            self._resume()

    # -- checkpoints -------------------------------------------------------------------------

    def _checkpoint_paths(self) -> list[tuple[int, Path]]:
        folder = self.out / CHECKPOINTS
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"step-(\d+)\.pt", p.name))]
        return sorted(found)

    def _resume(self) -> None:
        paths = self._checkpoint_paths()
        if not paths:
            return
        step, path = paths[-1]
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["stage"] != self.cfg.stage:
            raise ValueError(f"{path} is a {state['stage']!r} checkpoint; this run is stage {self.cfg.stage!r}")
        self.generator.load_state_dict(state["generator"])
        self.optim.load_state_dict(state["optim"])
        if self.critic is not None and self.critic_optim is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic_optim.load_state_dict(state["critic_optim"])
        self.ema = state.get("ema")
        self.step = step
        self.log(f"resumed from {path} at step {step}")

    def save_checkpoint(self) -> Path | None:
        if not self.procs.is_main:
            return None
        state: dict[str, object] = {
            "stage": self.cfg.stage,
            "generator": self.generator.state_dict(),
            "optim": self.optim.state_dict(),
        }
        if self.critic is not None and self.critic_optim is not None:
            state["critic"] = self.critic.state_dict()
            state["critic_optim"] = self.critic_optim.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema
        folder = self.out / CHECKPOINTS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{self.step:07d}.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def student_state(self) -> dict[str, torch.Tensor]:
        """The weights to serve: the EMA when there is one, in the release's key names."""
        state = self.generator.state_dict()
        if self.ema is not None:
            state = {k: self.ema.get(k, v) for k, v in state.items()}
        return {k: v.detach().float().contiguous().cpu() for k, v in state.items()}

    def save_student(self) -> Path | None:
        if not self.procs.is_main:
            return None
        from safetensors.torch import save_file

        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / STUDENT_FILE
        save_file(self.student_state(), str(path))
        return path

    # -- one step ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def _global_batch(self) -> int:
        return self.cfg.ode.global_batch if self.cfg.stage == "ode" else self.cfg.dmd.global_batch

    def _apply(self, model: LiveTalkDiT, optim: torch.optim.Optimizer, loss: torch.Tensor, clip: float) -> float:
        optim.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in model.parameters() if p.requires_grad]
        self.procs.sum_gradients(params)
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        optim.step()
        return norm

    def _ode_step(self) -> dict[str, float]:
        assert self.trajectories is not None
        cfg, g_batch = self.cfg, self.cfg.ode.global_batch
        samples, states, levels = [], [], []
        for pos in self.procs.positions(g_batch):
            seg, traj = self.trajectories[sample_index(len(self.trajectories), cfg.seed, self.step, g_batch, pos)]
            samples.append(self.data[seg])
            states.append(traj)
            levels.append(block_levels(cfg.stream, cfg.latent_frames, sample_generator(cfg.seed, self.step, pos)))
        batch = Batch.of(samples, self.device)
        with self._autocast():
            per_sample, predicted = ode_loss(
                self.generator,
                cfg.stream,
                batch,
                torch.stack(states).to(self.device),
                torch.stack(levels).to(self.device),
            )
        norm = self._apply(self.generator, self.optim, per_sample.sum() / g_batch, cfg.ode.optim.grad_clip)
        self.last_sample = predicted.detach()
        return {"ode/loss": self.procs.mean(float(per_sample.detach().mean())), "ode/grad_norm": norm}

    def _dmd_step(self) -> dict[str, float]:
        assert self.teacher is not None and self.critic is not None and self.critic_optim is not None
        cfg, d = self.cfg, self.cfg.dmd
        teacher, critic = self.teacher, self.critic
        positions = self.procs.positions(d.global_batch)
        samples = [self.data[sample_index(len(self.data), cfg.seed, self.step, d.global_batch, p)] for p in positions]
        batch = Batch.of(samples, self.device)
        gens = [sample_generator(cfg.seed, self.step, p) for p in positions]
        exit_at = exit_step(cfg.stream.num_steps, cfg.seed, self.step)
        values: dict[str, float] = {"dmd/exit_step": float(exit_at)}

        def levels() -> tuple[torch.Tensor, torch.Tensor]:
            sigma = torch.cat([dmd_sigmas(1, g, d.timestep_shift, d.min_timestep, d.max_timestep) for g in gens])
            noise = torch.stack([torch.randn(batch.latents.shape[1:], generator=g) for g in gens])
            return sigma.to(self.device), noise.to(self.device)

        def clean_of(model: LiveTalkDiT, scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
            def clean(x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
                x_t = force_reference(x_t, batch.reference)
                flow = guided_flow(model, x_t, sigma, batch, scale)
                return x_t - sigma.view(-1, 1, 1, 1, 1) * flow

            return clean

        # The rollout's cache attention cannot be recomputed later: no checkpointing in it.
        self.generator.gradient_checkpointing = False
        if self.step % d.critic_per_generator == 0:
            with self._autocast():
                x = rollout(self.sampler, batch, gens, exit_at)
                sigma, noise = levels()
                mask = frame_mask(batch.frames, d.masked_blocks * cfg.stream.frames_per_block, x)
                per_sample, stats = dmd_loss(
                    x, sigma, noise, clean_of(teacher, d.guidance_scale), clean_of(critic, 1.0), mask
                )
            norm = self._apply(
                self.generator, self.optim, per_sample.sum() / d.global_batch, d.generator_optim.grad_clip
            )
            self._update_ema()
            values.update({f"dmd/{k}": self.procs.mean(v) for k, v in stats.items()})
            values["dmd/generator_loss"] = self.procs.mean(float(per_sample.detach().mean()))
            values["dmd/generator_grad_norm"] = norm
            self.last_sample = x.detach()
        with torch.no_grad(), self._autocast():
            x = rollout(self.sampler, batch, gens, exit_at)
        sigma, noise = levels()
        mask = frame_mask(batch.frames, d.critic_masked_frames, x)
        with self._autocast():
            per_sample = critic_loss(
                lambda x_t, s: bidirectional_flow(critic, force_reference(x_t, batch.reference), s, batch),
                x,
                sigma,
                noise,
                mask,
            )
        norm = self._apply(critic, self.critic_optim, per_sample.sum() / d.global_batch, d.critic_optim.grad_clip)
        values["dmd/critic_loss"] = self.procs.mean(float(per_sample.detach().mean()))
        values["dmd/critic_grad_norm"] = norm
        self.generator.gradient_checkpointing = cfg.gradient_checkpointing
        return values

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.cfg.dmd
        params = {k: v.detach().float() for k, v in self.generator.named_parameters()}
        if self.ema is None or self.step < d.ema_start_step:
            self.ema = {k: v.clone() for k, v in params.items()}
            return
        for k, v in params.items():
            self.ema[k].mul_(d.ema_decay).add_(v, alpha=1.0 - d.ema_decay)

    # -- the loop -----------------------------------------------------------------------------

    def _logger(self):  # noqa: ANN202 (tensorboard is optional until a run logs)
        if self.writer is None and self.procs.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))
        return self.writer

    def _log_samples(self, latents: torch.Tensor) -> None:
        writer = self._logger()
        if writer is None:
            return
        first = latents[:1].float()
        if self.vae is not None:
            # The first sample's frames, decoded as the node decodes them.
            frames = self.vae.decode(first)[0].transpose(0, 1).cpu() * 0.5 + 0.5
            writer.add_images("samples/frames", frames.clamp(0.0, 1.0), self.step)
        # A latent preview: channels 0..2 of each frame, scaled to [0, 1].
        preview = first[0, :3].transpose(0, 1).cpu()
        lo, hi = preview.amin(), preview.amax()
        writer.add_images("samples/latent_rgb", (preview - lo) / (hi - lo + 1e-8), self.step)

    def steps(self, until: int | None = None) -> Iterator[StepLog]:
        """Run steps until `until` (default: the stage's configured count), yielding each step's log."""
        total = until if until is not None else (self.cfg.ode.steps if self.cfg.stage == "ode" else self.cfg.dmd.steps)
        while self.step < total:
            values = self._ode_step() if self.cfg.stage == "ode" else self._dmd_step()
            self.step += 1
            entry = StepLog(self.step, values)
            writer = self._logger() if self.step % self.cfg.log_every == 0 or self.step == total else None
            if writer is not None:
                for name, value in values.items():
                    writer.add_scalar(name, value, self.step)
                self.log(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
            if self.last_sample is not None and self.step % self.cfg.sample_every == 0:
                self._log_samples(self.last_sample)
            if self.step % self.cfg.checkpoint_every == 0:
                self.save_checkpoint()
            yield entry

    def run(self, until: int | None = None) -> list[StepLog]:
        logs = list(self.steps(until))
        self.save_checkpoint()
        self.save_student()
        self.close()
        return logs

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.procs.barrier()
        self.procs.close()
