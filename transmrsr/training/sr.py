"""Stage 2 (SPEC section 4): super-resolution training with validation.

For TransMRSR the decoder starts from the prior (fine-tuned unless ``freeze_decoder``) and the
SDT centroids come with the prior file; for GFP-GAN the generator starts from a StyleGAN2 prior
(fine-tuned unless ``freeze_decoder``, its ToRGBs always trained); the other baselines
(``config.arch``) train through the same loop. Loss: L1 + content + style (VGG19 or stage-1
discriminator features; weights 0 = L1). Adam, learning rate halved every ``lr_halve_every``
epochs; after each epoch the validation volumes are degraded, restored plane by plane and
scored with the paper protocol, and the run stops when the validation PSNR has not improved by
more than ``min_delta`` dB for ``patience`` epochs. ``best.pt`` / ``model_best.safetensors``
hold the best epoch, ``last.pt`` the newest state.

Exact resume: the batch order is a function of (seed, epoch) and each pair's randomness of
(seed, epoch, index) (see :mod:`transmrsr.training.data`), so the data position is the step
count; weights, Adam and scheduler states, validation history and RNG states are in the
checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transmrsr.degradation import simulate_interpolated_lr
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.compare import default_slice_axis
from transmrsr.evaluation.metrics import paper_protocol
from transmrsr.inference.planes import restore_along_planes
from transmrsr.models.gfpgan import GFPGAN
from transmrsr.models.priors import (
    DEFAULT_PRIOR,
    PriorConfig,
    prior_arch_of,
    prior_config_from_dict,
)
from transmrsr.models.registry import build_model, config_to_dict
from transmrsr.models.styleswin import StyleGAN2Discriminator
from transmrsr.models.transmrsr import CENTROIDS_KEY, TransMRSR, with_guide
from transmrsr.pairs import MIN_SIGNAL_FRACTION, SIGNAL_LEVEL
from transmrsr.training.checkpoint import (
    load_prior,
    load_prior_for,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
    split_prior,
)
from transmrsr.training.config import SRTrainConfig, config_from_dict
from transmrsr.training.data import PairDataset, load_normalised, thick_array_axis
from transmrsr.training.distributed import (
    DistContext,
    ShardedBatchSampler,
    broadcast_flag,
    mean_over_ranks,
)
from transmrsr.training.losses import build_sr_loss
from transmrsr.training.monitor import RunMonitor
from transmrsr.training.runs import RunData, load_resume_state, save_run_files
from transmrsr.training.synthetic import (
    HeadConfig,
    MixedDataset,
    training_heads,
    validation_heads,
)

log = logging.getLogger(__name__)


@dataclass
class ValidationSet:
    """Normalised HR validation volumes with their LR inputs, degraded once per factor."""

    items: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        data: RunData,
        config: SRTrainConfig,
        extra: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
    ) -> ValidationSet:
        """The run's validation subjects, then ``extra`` ``(name, normalised volume, affine)``
        (synthetic heads with skull), each degraded once per validation factor.

        A guided run (``guide_channels``) is validated on guided synthetic heads alone (each
        ``[2, ...]``: the head, then its guide), whose guide travels with every item: the real
        subjects have no second contrast."""
        subjects = [] if guide_channels_of(config) else list(data.val)
        volumes, affines = load_normalised(subjects)
        named = [
            ("subjects", r.name, v, a) for r, v, a in zip(subjects, volumes, affines, strict=True)
        ]
        items = []
        for group, name, volume, affine in [*named, *(("heads", *e) for e in extra)]:
            hr, guide = (volume, None) if volume.ndim == 3 else (volume[0], volume[1])
            thick = thick_array_axis(affine, config.pairs.thick_axis)
            slice_axis = default_slice_axis(affine, thick)
            signal = (np.moveaxis(hr, slice_axis, 0) > SIGNAL_LEVEL).mean(axis=(1, 2))
            planes = np.flatnonzero(signal >= MIN_SIGNAL_FRACTION)
            if config.val_max_planes is not None and len(planes) > config.val_max_planes:
                pick = np.linspace(0, len(planes) - 1, config.val_max_planes).round().astype(int)
                planes = planes[pick]
            ref = np.moveaxis(hr, slice_axis, 0)[planes]
            for factor in config.val_factors:
                lr = simulate_interpolated_lr(hr, thick, factor, method=config.pairs.interpolation)
                in_plane = 3 - thick - slice_axis
                cubic = np.transpose(lr, (slice_axis, thick, in_plane))[planes]
                ref_t = np.transpose(hr, (slice_axis, thick, in_plane))[planes]
                rng = (float(ref.min()), float(ref.max()))
                base = paper_protocol(cubic, ref_t, slice_axis=0, ref_range=rng).psnr
                items.append(
                    {
                        "name": f"{name} x{factor:g}",
                        "group": group,
                        "lr": lr,
                        "ref": ref_t,
                        "thick": thick,
                        "slice_axis": slice_axis,
                        "planes": planes,
                        "range": rng,
                        "cubic_psnr": base,
                        "guide": guide,
                    }
                )
        return cls(items)

    def evaluate(self, model: nn.Module, ctx: DistContext, batch_size: int) -> dict[str, float]:
        """Mean paper-protocol PSNR/SSIM over validation items and the gain over cubic; with
        synthetic heads also the gain of each group (``gain_db_subjects``, ``gain_db_heads``)."""
        psnrs, ssims, gains = [], [], []
        for item in self.items:
            pred = restore_along_planes(
                model,
                item["lr"],
                item["thick"],
                slice_axes=[item["slice_axis"]],
                plane_indices=item["planes"],
                batch_size=batch_size,
                device=ctx.device,
                bf16=ctx.use_bf16,
                guide=item["guide"],
            )
            m = paper_protocol(pred, item["ref"], slice_axis=0, ref_range=item["range"])
            psnrs.append(m.psnr)
            ssims.append(m.ssim)
            gains.append(m.psnr - item["cubic_psnr"])
        scores = {
            "psnr": float(np.mean(psnrs)),
            "ssim": float(np.mean(ssims)),
            "gain_db": float(np.mean(gains)),
        }
        groups = [item["group"] for item in self.items]
        if len(set(groups)) > 1:
            for group in sorted(set(groups)):
                of = [g for g, name in zip(gains, groups, strict=True) if name == group]
                scores[f"gain_db_{group}"] = float(np.mean(of))
        return scores


def guide_channels_of(config: SRTrainConfig) -> int:
    """Guide planes the run's network takes (0: an unguided run)."""
    return int(getattr(config.model, "guide_channels", 0))


def check_guided(config: SRTrainConfig) -> None:
    """A guided run trains on guided synthetic heads alone (two contrasts of one anatomy) and
    is validated on guided heads: refuse a config that cannot give it those."""
    if not guide_channels_of(config):
        return
    synthetic = config.synthetic
    if synthetic is None or synthetic.guide is None:
        raise TransMRSRError(
            "a guided network (guide_channels) trains on synthetic heads with a guide: give "
            "--synthetic DIR and --guide-contrast"
        )
    if synthetic.ratio != 1.0 or synthetic.val_heads < 1:
        raise TransMRSRError(
            "a guided run takes every sample from guided synthetic heads (synthetic ratio 1) "
            "and is validated on them (at least one synthetic validation head)"
        )


def build_network(
    config: SRTrainConfig, prior_path: Path | None
) -> tuple[nn.Module, StyleGAN2Discriminator | None]:
    """The stage-2 network (TransMRSR, GFP-GAN: initialised from the prior) and the prior's
    discriminator (for discriminator-feature perceptual losses; ``None`` without a prior)."""
    if config.arch == "gfpgan":
        return _gfpgan_network(config, prior_path)
    if config.arch != "transmrsr":
        return build_model(config.arch, config.model), _prior_discriminator(prior_path)
    model = TransMRSR(config.model)
    if prior_path is None:
        if config.model.use_prior:
            raise TransMRSRError(
                "stage 2 needs --prior PRIOR (from train-prior and fit-centroids), or a config "
                "with use_prior false"
            )
        if config.model.use_sdt and config.model.psi < 1.0:
            raise TransMRSRError("SDT needs centroids from a prior file: give --prior")
        return model, None
    generator_state, disc_state, prior_config = _prior_parts(config, prior_path)
    if config.model.use_sdt and config.model.psi < 1.0 and CENTROIDS_KEY not in generator_state:
        raise TransMRSRError(
            f"{prior_path}: the prior has no SDT centroids; run "
            f"'transmrsr fit-centroids {prior_path}' first"
        )
    if config.model.use_prior:
        model.load_prior(generator_state)
    elif model.sdt is not None and CENTROIDS_KEY in generator_state:
        model.sdt.set_centroids(generator_state[CENTROIDS_KEY])
    return model, _discriminator(prior_config, disc_state)


def _gfpgan_network(
    config: SRTrainConfig, prior_path: Path | None
) -> tuple[nn.Module, StyleGAN2Discriminator | None]:
    """GFP-GAN with its generator from a StyleGAN2 prior file (which needs no centroids)."""
    model = GFPGAN(config.model)
    if prior_path is None:
        if config.model.use_prior:
            raise TransMRSRError(
                "gfpgan needs --prior PRIOR (a StyleGAN2 prior from 'transmrsr train-prior "
                "--arch stylegan2'), or a config with use_prior false"
            )
        return model, None
    generator_state, disc_state, prior_config = _prior_parts(config, prior_path)
    if config.model.use_prior:
        model.load_prior(generator_state)
    return model, _discriminator(prior_config, disc_state)


def _prior_parts(
    config: SRTrainConfig, prior_path: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, PriorConfig]:
    """The generator and discriminator weights of a prior file made for ``config.arch``'s
    prior, and the prior's config, which must be the model's ``prior``."""
    state, prior_config, _ = load_prior_for(prior_path, config.arch)
    if prior_config != config.model.prior:
        raise TransMRSRError(
            f"{prior_path}: the prior's network sizes differ from the config's model.prior"
        )
    generator_state, disc_state = split_prior(state)
    return generator_state, disc_state, prior_config


def _discriminator(
    config: PriorConfig, state: dict[str, torch.Tensor] | None
) -> StyleGAN2Discriminator | None:
    if state is None:
        return None
    discriminator = StyleGAN2Discriminator(config)
    discriminator.load_state_dict(state)
    return discriminator


def init_network(
    config: SRTrainConfig, init: str | Path, prior_path: Path | None
) -> tuple[nn.Module, StyleGAN2Discriminator | None]:
    """The stage-2 network with every weight from a trained model (fine-tuning), and the
    prior's discriminator when a prior is given (for discriminator-feature perceptual losses).

    ``init`` is anything :func:`~transmrsr.inference.restore.load_model` reads: a shipped model
    name, a model file or a stage-2 checkpoint. Its network must be the config's: fine-tuning
    changes the data, the loss and the schedule, not the architecture.
    """
    from transmrsr.inference.restore import load_model

    loaded = load_model(init, specialists=False)
    if guide_channels_of(config) and not getattr(loaded.network.config, "guide_channels", 1):
        # An unguided model starts a guided run with a guide channel of zero weight.
        branch = int(getattr(config.model, "guide_branch", 0))
        blocks = int(getattr(config.model, "guide_blocks", 1))
        guided = with_guide(loaded.network, guide_channels_of(config), branch=branch, blocks=blocks)
        loaded = replace(loaded, network=guided)
    if loaded.network.config != config.model:  # also differs for another architecture
        raise TransMRSRError(
            f"{init}: its network differs from the run config's {config.arch} model "
            "(fine-tune with the config it was trained with)"
        )
    log.info("stage 2 starts from the weights of %s", loaded.source)
    return loaded.network, _prior_discriminator(prior_path)


def _prior_discriminator(prior_path: Path | None) -> StyleGAN2Discriminator | None:
    """The stage-1 discriminator stored in a prior file (``None``: no prior, or none in it)."""
    if prior_path is None:
        return None
    state, prior_config, _ = load_prior(prior_path)
    return _discriminator(prior_config, split_prior(state)[1])


def _disc_config(state: dict[str, Any]) -> PriorConfig:
    """The perceptual discriminator's sizes saved in a checkpoint, as the config of the prior
    it came with (``discriminator_arch``; checkpoints without it had a StyleSwin prior, and
    older TransMRSR checkpoints did not save the sizes: there they are the model's prior's)."""
    saved = state.get("discriminator_config")
    if saved is not None:
        return prior_config_from_dict(state.get("discriminator_arch") or DEFAULT_PRIOR, saved)
    return config_from_dict(state["config"]).model.prior  # type: ignore[union-attr]


def new_history() -> dict[str, Any]:
    """Validation history of a run: every epoch's scores, the best one, early-stopping state."""
    return {
        "best_psnr": -np.inf,
        "best_epoch": -1,
        "patience_psnr": -np.inf,
        "epochs": [],
        "stale": 0,
        "stopped": False,
    }


def record_epoch(history: dict[str, Any], scores: dict[str, Any], config: SRTrainConfig) -> bool:
    """Add an epoch's validation scores; return whether to stop early.

    The best epoch is the highest PSNR. Early stopping (SPEC: 10 epochs without 0.05 dB) counts
    epochs since the PSNR last rose ``min_delta`` above the level of the previous such rise, so
    a run that gains 0.03 dB every epoch is improving (0.06 dB in two epochs), not stale.
    """
    psnr = scores["psnr"]
    if psnr > history["best_psnr"]:
        history["best_psnr"] = psnr
        history["best_epoch"] = scores["epoch"]
    if psnr > history["patience_psnr"] + config.min_delta:
        history["patience_psnr"] = psnr
        history["stale"] = 0
    else:
        history["stale"] += 1
    history["epochs"].append(scores)
    history["stopped"] = history["stale"] >= config.patience
    return history["stopped"]


def replay_history(epochs: list[dict[str, Any]], config: SRTrainConfig) -> dict[str, Any]:
    """The history rebuilt from its epoch scores (for checkpoints without ``patience_psnr``)."""
    history = new_history()
    for scores in epochs:
        record_epoch(history, scores, config)
    return history


def _halving_schedule(every: int):
    return lambda epoch: 0.5 ** (epoch // every)


@dataclass
class SRResult:
    best_psnr: float
    best_epoch: int
    epochs: int
    steps: int
    stopped_early: bool
    seconds: float


def train_sr(
    data: RunData,
    config: SRTrainConfig,
    out: Path,
    ctx: DistContext,
    *,
    prior_path: Path | None,
    resume_from: Path | None = None,
    init: str | Path | None = None,
    stop_after: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    workers: int = 0,
) -> SRResult:
    """Train (or continue) a stage-2 run in ``out``.

    ``stop_after`` ends this run after that many steps in total, ``max_seconds`` after
    that much wall time (both with a checkpoint and ``model_last.safetensors``), for
    time-boxed runs and equal-budget benchmarks; a later ``--resume`` continues. ``init``
    starts a new run from a trained model's weights (see :func:`init_network`) instead of the
    prior; a resumed run ignores it, its weights are in the checkpoint. ``workers`` processes
    make the pairs (0: in the loop); items are seeded by index, so they do not change the run.
    """
    start_time = time.perf_counter()
    state = None
    if resume_from is not None:
        state, config = load_resume_state(resume_from, config)
        prior_path = Path(state["prior"]) if state.get("prior") else None
    check_guided(config)
    guided = guide_channels_of(config) > 0
    if not data.val and not guided:
        raise TransMRSRError("stage 2 needs at least one validation subject (see --val)")
    torch.manual_seed(config.seed)
    if state is None and init is not None:
        model, discriminator = init_network(config, init, prior_path)
    elif state is None:
        model, discriminator = build_network(config, prior_path)
    else:  # every weight (decoder, centroids, perceptual backbone) comes from the checkpoint
        model, discriminator = build_model(config.arch, config.model), None
        model.load_state_dict(state["model"])
        if state.get("discriminator") is not None:
            discriminator = StyleGAN2Discriminator(_disc_config(state))
            discriminator.load_state_dict(state["discriminator"])
    model.to(ctx.device)
    if config.freeze_decoder and isinstance(model, TransMRSR):
        for p in model.decoder.parameters():
            p.requires_grad_(False)
    if config.freeze_decoder and isinstance(model, GFPGAN):
        for p in model.prior_parameters():  # its ToRGBs are new: they always train
            p.requires_grad_(False)
    if config.train_only_guide:
        if not isinstance(model, TransMRSR) or model.guide_branch is None:
            raise TransMRSRError("train_only_guide needs a TransMRSR with a guide branch")
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("guide_branch."))
    loss_fn = build_sr_loss(
        backbone=config.perceptual,
        vgg_weights=config.vgg_weights,
        content_weight=config.content_weight,
        style_weight=config.style_weight,
        discriminator=discriminator,
    ).to(ctx.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _halving_schedule(config.lr_halve_every)
    )
    step, history = 0, new_history()
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        history = state["history"]
        if "patience_psnr" not in history:  # checkpoints of earlier versions
            history = replay_history(history["epochs"], config)
        set_rng_state(state["rng"])
        log.info("resumed stage 2 at step %d (epoch %d)", step, len(history["epochs"]))

    if ctx.is_main and state is None:
        save_run_files(out, config, data)
    volumes, affines = ([], []) if guided else load_normalised(data.train)
    if config.synthetic is not None:
        heads, head_affines = training_heads(config.synthetic, config.seed, out, ctx)
        synthetic = PairDataset(
            [h[0] for h in heads] if guided else heads,
            head_affines,
            config.pairs,
            seed=config.seed,
            guides=[h[1] for h in heads] if guided else None,
        )
    if guided:
        dataset = synthetic
    else:
        dataset = PairDataset(volumes, affines, config.pairs, seed=config.seed)
        if config.synthetic is not None:
            dataset = MixedDataset(dataset, synthetic, config.synthetic.ratio, config.seed)
    sampler = ShardedBatchSampler(
        len(dataset),
        config.batch_size,
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        samples_per_epoch=config.samples_per_epoch,
    )
    per_epoch = sampler.batches_per_epoch
    validation = None
    if ctx.is_main:
        heads = []
        if config.synthetic is not None:
            heads = validation_heads(config.synthetic, config.seed, cache=out / "synthetic-val")
        validation = ValidationSet.build(data, config, heads)
    log.info(
        "stage 2: %d training planes from %d volumes, %d steps of %d per epoch, "
        "%d validation items",
        len(dataset),
        len(volumes),
        per_epoch,
        config.batch_size,
        len(validation.items) if validation else 0,
    )
    train_model: nn.Module = model
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)
    monitor = RunMonitor(out, enabled=ctx.is_main, resumed_at=step if state else None)
    max_steps = config.max_epochs * per_epoch
    end = max_steps if stop_after is None else min(max_steps, stop_after)
    stopped = bool(history.get("stopped", False))
    bar = tqdm(
        total=max_steps,
        initial=step,
        unit="step",
        desc="train",
        disable=not (progress and ctx.is_main),
    )
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.use_bf16)
    tick, tick_step = time.perf_counter(), step

    def checkpoint(path: Path) -> None:
        save_checkpoint(
            path,
            {
                "stage": "sr",
                "config": config.to_dict(),
                "prior": str(prior_path) if prior_path else None,
                "step": step,
                "model": model.state_dict(),
                "discriminator": discriminator.state_dict() if discriminator else None,
                "discriminator_config": asdict(discriminator.config) if discriminator else None,
                "discriminator_arch": (
                    prior_arch_of(discriminator.config) if discriminator else None
                ),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "rng": rng_state(),
            },
        )

    model.train()
    while step < end and not stopped:
        epoch, position = divmod(step, per_epoch)
        dataset.set_epoch(epoch)
        sampler.set_position(epoch, position)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
        for lr_img, hr_img, _factor in loader:
            if step >= end:
                break
            lr_img, hr_img = lr_img.to(ctx.device), hr_img.to(ctx.device)
            with autocast:
                pred = train_model(lr_img)
                loss, parts = loss_fn(pred.float(), hr_img)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.update(1)
            if max_seconds is not None and broadcast_flag(
                ctx, time.perf_counter() - start_time > max_seconds
            ):
                end = step
            if step % config.log_every == 0:
                now = time.perf_counter()
                values = {k: mean_over_ranks(ctx, v) for k, v in parts.items()}
                values["lr"] = optimizer.param_groups[0]["lr"]
                values["slices_per_s"] = (step - tick_step) * config.batch_size / (now - tick)
                tick, tick_step = now, step
                monitor.scalars(step, values)
                bar.set_postfix(loss=f"{values['total']:.4f}", sps=f"{values['slices_per_s']:.2f}")
            epoch_end = step % per_epoch == 0
            if epoch_end:
                stopped = _end_epoch(
                    step // per_epoch, model, validation, history, config, ctx, monitor, out, step
                )
                scheduler.step()
                if ctx.is_main:
                    checkpoint(out / "last.pt")
                    if history["best_epoch"] == step // per_epoch:
                        checkpoint(out / "best.pt")
                        _export(out / "model_best.safetensors", model, config, history, step)
                if stopped:
                    break
            elif ctx.is_main and (step % config.checkpoint_every == 0 or step == end):
                checkpoint(out / "last.pt")
    bar.close()
    monitor.close()
    if ctx.is_main and step > 0:
        _export(out / "model_last.safetensors", model, config, history, step)
    return SRResult(
        best_psnr=float(history["best_psnr"]),
        best_epoch=int(history["best_epoch"]),
        epochs=len(history["epochs"]),
        steps=step,
        stopped_early=stopped,
        seconds=time.perf_counter() - start_time,
    )


def _end_epoch(
    epoch: int,
    model: nn.Module,
    validation: ValidationSet | None,
    history: dict[str, Any],
    config: SRTrainConfig,
    ctx: DistContext,
    monitor: RunMonitor,
    out: Path,
    step: int,
) -> bool:
    """Validate (rank 0), update the early-stopping state; every rank learns whether to stop."""
    stop = False
    if ctx.is_main and validation is not None:
        t0 = time.perf_counter()
        scores = validation.evaluate(model, ctx, config.batch_size)
        model.train()
        stop = record_epoch(history, {"epoch": epoch, "step": step, **scores}, config)
        monitor.scalars(step, {**scores, "seconds": time.perf_counter() - t0}, prefix="val")
        monitor.flush()
        groups = {k[len("gain_db_") :]: v for k, v in scores.items() if k.startswith("gain_db_")}
        by_group = "".join(f", {group} {gain:+.2f}" for group, gain in groups.items())
        log.info(
            "epoch %d: val PSNR %.2f dB (%+.2f dB over cubic%s), SSIM %.4f; "
            "best %.2f at epoch %d%s",
            epoch,
            scores["psnr"],
            scores["gain_db"],
            by_group,
            scores["ssim"],
            history["best_psnr"],
            history["best_epoch"],
            "; stopping early" if stop else "",
        )
    return broadcast_flag(ctx, stop)


def _export(
    path: Path, model: nn.Module, config: SRTrainConfig, history: dict[str, Any], step: int
) -> None:
    info = {
        "steps": step,
        "epochs": len(history["epochs"]),
        "best_val_psnr": history["best_psnr"],
        "best_epoch": history["best_epoch"],
        "factor_range": list(config.pairs.factor_range),
        "thick_axis_trained": config.pairs.thick_axis,
        "thickness_range": list(config.pairs.thickness_range),
        "gain_range": list(config.pairs.gain_range),
        "slice_profiles": list(config.pairs.profiles),
    }
    if config.synthetic is not None:
        info["synthetic"] = {
            "ratio": config.synthetic.ratio,
            "contrast": config.synthetic.head.contrast,
            "count": config.synthetic.count,
        }
    save_model(path, model.state_dict(), config_to_dict(config.model), info=info)


def guided_config(config: SRTrainConfig, contrast: str, branch: int = 0) -> SRTrainConfig:
    """``config`` for a guided network: one guide channel, guides of ``contrast`` made for
    every synthetic head; with ``branch`` a TransMRSR's guide branch of that width, which
    alone learns."""
    if config.arch not in GUIDED_ARCHITECTURES:
        raise TransMRSRError(
            f"--guide-contrast trains a guided network ({', '.join(GUIDED_ARCHITECTURES)}), "
            f"not {config.arch}"
        )
    if config.synthetic is None:
        raise TransMRSRError("--guide-contrast needs synthetic heads (--synthetic DIR)")
    synthetic = replace(config.synthetic, guide=HeadConfig(contrast=contrast))
    model = replace(config.model, guide_channels=1)
    if branch:
        if config.arch != "transmrsr":
            raise TransMRSRError("--guide-branch is a TransMRSR's; MINet has its own branches")
        model = replace(model, guide_branch=branch)
    return replace(config, model=model, synthetic=synthetic, train_only_guide=bool(branch))


#: Architectures that take a guide: TransMRSR with a guide channel, and MINet (always guided).
GUIDED_ARCHITECTURES = ("transmrsr", "minet")
