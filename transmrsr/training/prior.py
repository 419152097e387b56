"""Stage 1 (SPEC section 4): the StyleSwin generative prior, trained as a GAN.

The same loop trains GFP-GAN's StyleGAN2 prior (``config.arch == "stylegan2"``): both
generators map z to an image and train against the same StyleGAN2 discriminator; the prior
file records which one it holds.

Non-saturating logistic loss, lazy R1 on real images (gamma 10 every 16 steps, scaled by the
interval as in StyleGAN2, whose lazy-regularisation correction of the discriminator's Adam
settings is applied too), an EMA copy of the generator (decay 0.999) that becomes the prior.

Exact resume: the data position is a function of the step (the batch sampler is deterministic),
the latent codes of step ``s`` on rank ``r`` come from a generator seeded by ``(seed, s, r)``,
the global RNG (StyleGAN2's noise injection draws from it) is seeded by them too at the start
of every step, and the checkpoint carries every weight, optimiser state and the global RNG
state.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transmrsr.evaluation.figures import save_grid_png
from transmrsr.models.priors import build_prior_generator
from transmrsr.models.styleswin import StyleGAN2Discriminator
from transmrsr.training.checkpoint import (
    DISCRIMINATOR_PREFIX,
    rng_state,
    save_checkpoint,
    save_prior,
    set_rng_state,
)
from transmrsr.training.config import PriorTrainConfig
from transmrsr.training.data import SliceDataset, load_normalised
from transmrsr.training.distributed import DistContext, ShardedBatchSampler, mean_over_ranks
from transmrsr.training.monitor import RunMonitor
from transmrsr.training.runs import RunData, load_resume_state, save_run_files
from transmrsr.training.synthetic import MixedDataset, training_heads

log = logging.getLogger(__name__)

N_SAMPLES = 16  # images in each sample grid


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one step on one process."""
    return (seed * 1_000_003 + step) * 257 + rank


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The random source of one step on one process (independent of what ran before)."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank))


def requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def r1_penalty(discriminator: nn.Module, real: Tensor) -> Tensor:
    """Mean squared gradient norm of D at real images (R1)."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean() + 0.0 * logits.sum()


@dataclass
class PriorResult:
    prior: Path | None
    steps: int
    seconds: float


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def train_prior(
    data: RunData,
    config: PriorTrainConfig,
    out: Path,
    ctx: DistContext,
    *,
    resume_from: Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    workers: int = 0,
) -> PriorResult:
    """Train (or continue) a stage-1 run in ``out``; export ``out/prior.safetensors`` at the end.

    ``stop_after`` ends this run after that many steps in total (a checkpoint is written),
    without exporting the prior unless the configured ``steps`` are reached. ``workers``
    processes make the slices (0: in the loop).
    """
    start_time = time.perf_counter()
    state = None
    if resume_from is not None:
        state, config = load_resume_state(resume_from, config)
    device = ctx.device
    torch.manual_seed(config.seed)  # same initial weights on every rank
    generator = build_prior_generator(config.model).to(device)
    discriminator = StyleGAN2Discriminator(config.model).to(device)
    ema = copy.deepcopy(generator).eval()
    requires_grad(ema, False)
    ratio = config.r1_every / (config.r1_every + 1)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(
        discriminator.parameters(),
        lr=config.lr * ratio,
        betas=(config.betas[0] ** ratio, config.betas[1] ** ratio),
    )
    step = 0
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step = int(state["step"])
        set_rng_state(state["rng"])
        log.info("resumed stage 1 (%s) at step %d", config.arch, step)

    if ctx.is_main and state is None:
        save_run_files(out, config, data)
    volumes, _ = load_normalised(data.train)
    dataset = SliceDataset(volumes, config.model.img_size, seed=config.seed)
    if config.synthetic is not None:
        heads, _ = training_heads(config.synthetic, config.seed, out, ctx)
        synthetic = SliceDataset(heads, config.model.img_size, seed=config.seed)
        dataset = MixedDataset(dataset, synthetic, config.synthetic.ratio, config.seed)
    sampler = ShardedBatchSampler(
        len(dataset),
        config.batch_size,
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    log.info(
        "stage 1 (%s): %d slices from %d volumes, %d batches of %d per epoch",
        config.arch,
        len(dataset),
        len(volumes),
        sampler.batches_per_epoch,
        config.batch_size,
    )
    g_train: nn.Module = generator
    d_train: nn.Module = discriminator
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_train = DistributedDataParallel(generator, device_ids=ids, broadcast_buffers=False)
        d_train = DistributedDataParallel(discriminator, device_ids=ids, broadcast_buffers=False)

    monitor = RunMonitor(out, enabled=ctx.is_main, resumed_at=step if state else None)
    fixed_z = torch.randn(
        N_SAMPLES, config.model.style_dim, generator=torch.Generator().manual_seed(config.seed)
    ).to(device)
    shard = config.batch_size // ctx.world_size
    style_dim = config.model.style_dim
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = tqdm(
        total=config.steps,
        initial=step,
        unit="step",
        disable=not (progress and ctx.is_main),
        desc="prior",
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=ctx.use_bf16)
    tick, tick_step = time.perf_counter(), step
    while step < end:
        epoch, position = divmod(step, sampler.batches_per_epoch)
        dataset.set_epoch(epoch)
        sampler.set_position(epoch, position)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
        for real in loader:
            if step >= end:
                break
            real = real.to(device)
            # The global RNG's draws in the step (noise injection) depend on the step alone,
            # not on what ran before it (a data loader made on resume draws from it too).
            torch.manual_seed((2 * step_seed(config.seed, step, ctx.rank) + 1) % 2**63)
            rng = step_generator(config.seed, step, ctx.rank)
            z_d = torch.randn(shard, style_dim, generator=rng).to(device)
            z_g = torch.randn(shard, style_dim, generator=rng).to(device)

            requires_grad(generator, False)
            requires_grad(discriminator, True)
            with autocast:
                fake = g_train(z_d)
                d_loss = (
                    F.softplus(d_train(fake.detach())).mean() + F.softplus(-d_train(real)).mean()
                )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            r1 = None
            if config.r1_gamma > 0 and step % config.r1_every == 0:
                penalty = r1_penalty(d_train, real)  # fp32: second derivatives
                opt_d.zero_grad(set_to_none=True)
                (config.r1_gamma / 2 * penalty * config.r1_every).backward()
                opt_d.step()
                r1 = float(penalty.detach())

            requires_grad(generator, True)
            requires_grad(discriminator, False)
            with autocast:
                g_loss = F.softplus(-d_train(g_train(z_g))).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            update_ema(ema, generator, config.ema_decay)
            step += 1
            bar.update(1)

            if step % config.log_every == 0 or step == end:
                values = {
                    "d_loss": mean_over_ranks(ctx, float(d_loss.detach())),
                    "g_loss": mean_over_ranks(ctx, float(g_loss.detach())),
                }
                if r1 is not None:
                    values["r1"] = r1
                now = time.perf_counter()
                values["images_per_s"] = (step - tick_step) * config.batch_size / (now - tick)
                tick, tick_step = now, step
                monitor.scalars(step, values)
                bar.set_postfix(d=f"{values['d_loss']:.3f}", g=f"{values['g_loss']:.3f}")
            if ctx.is_main and (step % config.sample_every == 0 or step == config.steps):
                _write_samples(
                    ema, fixed_z, out / "samples" / f"step_{step:07d}.png", monitor, step
                )
            if ctx.is_main and (step % config.checkpoint_every == 0 or step == end):
                save_checkpoint(
                    out / "last.pt",
                    {
                        "stage": "prior",
                        "config": config.to_dict(),
                        "step": step,
                        "generator": generator.state_dict(),
                        "discriminator": discriminator.state_dict(),
                        "ema": ema.state_dict(),
                        "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(),
                        "rng": rng_state(),
                    },
                )
    bar.close()
    monitor.close()
    prior = None
    if step >= config.steps and ctx.is_main:
        prior = export_prior(out / "prior.safetensors", ema, discriminator, config, step)
    return PriorResult(prior, step, time.perf_counter() - start_time)


def export_prior(
    path: Path,
    ema: nn.Module,
    discriminator: StyleGAN2Discriminator,
    config: PriorTrainConfig,
    step: int,
) -> Path:
    """The prior file: EMA generator + discriminator (perceptual backbone), no centroids yet;
    its metadata records the architecture."""
    state = dict(ema.state_dict())
    state.update({DISCRIMINATOR_PREFIX + k: v for k, v in discriminator.state_dict().items()})
    info = {"steps": step, "batch_size": config.batch_size, "seed": config.seed}
    out = save_prior(path, state, config.model, info=info)
    if config.arch == "styleswin":
        log.info("prior written: %s (run fit-centroids on it next)", out)
    else:
        log.info("%s prior written: %s (for train --arch gfpgan --prior)", config.arch, out)
    return out


@torch.no_grad()
def _write_samples(ema: nn.Module, z: Tensor, path: Path, monitor: RunMonitor, step: int) -> None:
    images = ema(z)[:, 0].float().cpu().numpy()
    n = int(np.ceil(np.sqrt(len(images))))
    size = images.shape[-1]
    grid = np.zeros((n * size, n * size), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, n)
        grid[r * size : (r + 1) * size, c * size : (c + 1) * size] = img
    save_grid_png(grid, path, title=f"EMA generator, step {step}")
    monitor.image(step, "samples", grid)
