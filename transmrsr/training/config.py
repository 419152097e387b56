"""Training configs: one typed source of truth per stage, saved with every checkpoint.

A run is fully described by its config (network sizes included) plus the data and split, so
``config.json`` beside the checkpoints is enough to understand or repeat it. Named presets give
the SPEC's paper setting and settings sized for a 2-core CPU; a JSON file (e.g. a saved
``config.json``) can be given instead of a name, and command-line flags override single fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from transmrsr.errors import TransMRSRError
from transmrsr.models import priors, registry, styleswin
from transmrsr.models import transmrsr as transmrsr_model
from transmrsr.models.styleswin import StyleSwinConfig
from transmrsr.models.transmrsr import TransMRSRConfig
from transmrsr.pairs import PairConfig
from transmrsr.training.synthetic import SyntheticConfig

PERCEPTUAL_BACKBONES = ("vgg19", "discriminator")


@dataclass(frozen=True)
class PriorTrainConfig:
    """Stage 1 (SPEC section 4): StyleSwin GAN on HR slices of all three planes (or the
    StyleGAN2 prior of GFP-GAN, ``arch="stylegan2"``, through the same loop).

    Attributes:
        arch: the prior's architecture (:mod:`transmrsr.models.priors`): ``styleswin``
            (TransMRSR's) or ``stylegan2`` (GFP-GAN's).
        model: generator/discriminator sizes (a config of ``arch``).
        batch_size: global batch (split over processes under torchrun).
        steps: total generator steps.
        lr, betas: Adam for both networks.
        r1_gamma, r1_every: lazy R1 penalty on real images (scaled by ``r1_every``).
        ema_decay: per-step decay of the EMA generator (the prior).
        sample_every, checkpoint_every, log_every: in steps.
        val, test: subjects kept out (count or fraction) when no split file is given; use the
            same values and seed for stage 2 so that both stages see the same split.
        seed: every random choice of the run.
        synthetic: synthetic heads from label maps mixed into the slices (``None``: none).
    """

    arch: str = priors.DEFAULT_PRIOR
    model: Any = field(default_factory=StyleSwinConfig)
    batch_size: int = 16
    steps: int = 400_000
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0
    r1_every: int = 16
    ema_decay: float = 0.999
    sample_every: int = 2000
    checkpoint_every: int = 1000
    log_every: int = 50
    val: float | int = 0.1
    test: float | int = 0.1
    seed: int = 0
    synthetic: SyntheticConfig | None = None

    def __post_init__(self) -> None:
        if self.arch not in priors.list_priors():
            raise TransMRSRError(
                f"unknown prior arch {self.arch!r}; choose one of {', '.join(priors.list_priors())}"
            )
        if isinstance(self.model, Mapping):
            object.__setattr__(self, "model", priors.prior_config_from_dict(self.arch, self.model))
        if not isinstance(self.model, priors.prior_config_class(self.arch)):
            raise TransMRSRError(f"the model config is not a {self.arch} config")
        _synthetic_from_dict(self)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _positive(self, "batch_size", "steps", "r1_every", "sample_every", "checkpoint_every")
        _positive(self, "log_every", "lr")
        if not 0.0 <= self.ema_decay < 1.0:
            raise TransMRSRError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.r1_gamma < 0:
            raise TransMRSRError(f"r1_gamma must be >= 0, got {self.r1_gamma}")

    def to_dict(self) -> dict[str, Any]:
        return {"stage": "prior", **asdict(self)}


@dataclass(frozen=True)
class SRTrainConfig:
    """Stage 2 (SPEC section 4): a super-resolution network on LR/HR pairs made on the fly.

    TransMRSR is the method; the baselines of the benchmark (EDSR, SwinIR, Restormer, MINet,
    GFP-GAN) train through the same pipeline with ``arch`` set to their registry name.

    Attributes:
        arch: registry name of the network (:mod:`transmrsr.models.registry`).
        model: that network's config (TransMRSR, GFP-GAN: its ``prior`` part must match the
            prior file).
        pairs: degradation, factor range, thick axis, patch size, augmentation.
        batch_size: global batch. lr: Adam; halved every ``lr_halve_every`` epochs.
        max_epochs, patience, min_delta: stop after ``max_epochs``, or when validation PSNR
            has not improved by more than ``min_delta`` dB for ``patience`` epochs.
        samples_per_epoch: planes per epoch (a fresh random subset each epoch); ``None`` =
            every training plane. Lets a CPU run validate and schedule at useful intervals.
        perceptual: ``"vgg19"`` (needs ``vgg_weights``) or ``"discriminator"`` (stage-1
            discriminator stored in the prior file); content/style weights 0 = L1 only.
        freeze_decoder: keep the prior's decoder weights fixed (default: fine-tune).
        train_only_guide: a guided TransMRSR with a guide branch learns in its branch alone,
            the rest as it was initialised (``--init``): the transformer then runs forward
            only, and the unguided restore it starts from stays what it was.
        val_factors: factors the validation volumes are degraded with (PSNR averaged).
        val_max_planes: validation planes per volume (evenly spaced); ``None`` = all.
        checkpoint_every, log_every: in steps; a checkpoint is also written every epoch.
        synthetic: synthetic heads from label maps mixed into the pairs (``None``: none).
    """

    arch: str = "transmrsr"
    model: Any = field(default_factory=TransMRSRConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    batch_size: int = 6
    lr: float = 1e-4
    lr_halve_every: int = 30
    max_epochs: int = 100
    patience: int = 10
    min_delta: float = 0.05
    samples_per_epoch: int | None = None
    perceptual: str = "vgg19"
    content_weight: float = 0.5
    style_weight: float = 0.5
    vgg_weights: str | None = None
    freeze_decoder: bool = False
    train_only_guide: bool = False
    val_factors: tuple[float, ...] = (4.0,)
    val_max_planes: int | None = None
    checkpoint_every: int = 500
    log_every: int = 20
    val: float | int = 0.1
    test: float | int = 0.1
    seed: int = 0
    synthetic: SyntheticConfig | None = None

    def __post_init__(self) -> None:
        _synthetic_from_dict(self)
        if self.arch not in registry.list_architectures():
            raise TransMRSRError(
                f"unknown arch {self.arch!r}; choose one of "
                f"{', '.join(registry.list_architectures())}"
            )
        if isinstance(self.model, Mapping):
            model = registry.config_from_dict({"arch": self.arch, "config": self.model})
            object.__setattr__(self, "model", model)
        if registry.arch_of_config(self.model) != self.arch:
            raise TransMRSRError(f"the model config is not a {self.arch} config")
        if isinstance(self.pairs, Mapping):
            object.__setattr__(self, "pairs", PairConfig(**self.pairs))
        object.__setattr__(self, "val_factors", tuple(float(f) for f in self.val_factors))
        _positive(self, "batch_size", "lr", "lr_halve_every", "max_epochs", "patience")
        _positive(self, "checkpoint_every", "log_every")
        if self.samples_per_epoch is not None and self.samples_per_epoch < self.batch_size:
            raise TransMRSRError("samples_per_epoch must be at least the batch size")
        if self.perceptual not in PERCEPTUAL_BACKBONES:
            raise TransMRSRError(
                f"perceptual must be one of {PERCEPTUAL_BACKBONES}, got {self.perceptual!r}"
            )
        if self.content_weight < 0 or self.style_weight < 0 or self.min_delta < 0:
            raise TransMRSRError("content_weight, style_weight and min_delta must be >= 0")
        lo, hi = self.pairs.factor_range
        if not 1.0 < lo <= hi <= 16.0:
            raise TransMRSRError(f"factor range must satisfy 1 < lo <= hi <= 16, got {lo}-{hi}")
        if not self.val_factors or any(not 1.0 < f <= 16.0 for f in self.val_factors):
            raise TransMRSRError(f"val_factors must be in (1, 16], got {self.val_factors}")
        if registry.prior_of(self.arch) and self.pairs.patch_size > self.model.img_size:
            raise TransMRSRError(
                f"patch_size {self.pairs.patch_size} exceeds the network size {self.model.img_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"stage": "sr", **asdict(self)}


def _synthetic_from_dict(config: Any) -> None:
    if isinstance(config.synthetic, Mapping):
        try:
            object.__setattr__(config, "synthetic", SyntheticConfig(**config.synthetic))
        except TypeError as exc:
            raise TransMRSRError(f"invalid synthetic config ({exc})") from None


def _positive(config: Any, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise TransMRSRError(f"{name} must be positive, got {getattr(config, name)}")


PRIOR_PRESETS: dict[str, PriorTrainConfig] = {
    "paper": PriorTrainConfig(),
    "compact": PriorTrainConfig(
        model=styleswin.PRESETS["compact"],
        batch_size=4,
        steps=20_000,
        sample_every=250,
        checkpoint_every=50,
        log_every=10,
    ),
    "tiny": PriorTrainConfig(
        model=styleswin.PRESETS["tiny"],
        batch_size=4,
        steps=40,
        r1_every=4,
        sample_every=20,
        checkpoint_every=10,
        log_every=5,
    ),
}

#: Learning rate of the StyleGAN2 prior: StyleGAN2's own (equalised learning rate everywhere;
#: the StyleSwin presets' 2e-4 suits its transformer blocks).
STYLEGAN2_LR = 2e-3


def prior_preset(name: str, arch: str = priors.DEFAULT_PRIOR) -> PriorTrainConfig:
    """The stage-1 preset ``name`` for prior ``arch``: the StyleGAN2 prior keeps the preset's
    batch, steps, R1, EMA and logging, takes its own network preset of the same name and
    StyleGAN2's learning rate."""
    if name not in PRIOR_PRESETS:
        raise TransMRSRError(f"unknown config {name!r}; choose one of {', '.join(PRIOR_PRESETS)}")
    config = PRIOR_PRESETS[name]
    if arch == config.arch:
        return config
    model = priors.prior_presets(arch)[name] if arch in priors.list_priors() else None
    lr = STYLEGAN2_LR if arch == "stylegan2" else config.lr
    return with_overrides(config, arch=arch, model=model, lr=lr)


SR_PRESETS: dict[str, SRTrainConfig] = {
    "paper": SRTrainConfig(pairs=PairConfig(factor_range=(4.0, 4.0))),
    "compact": SRTrainConfig(
        model=transmrsr_model.PRESETS["compact"],
        # No transposes: restoration always feeds the thick axis as rows, and the small model
        # learns that one direction about twice as fast (validation gain per step, measured).
        pairs=PairConfig(factor_range=(2.0, 8.0), transpose=False),
        batch_size=4,
        lr=2e-4,
        samples_per_epoch=400,
        lr_halve_every=30,
        max_epochs=100,
        perceptual="discriminator",
        val_factors=(4.0, 8.0),
        val_max_planes=48,
        checkpoint_every=25,
        log_every=5,
    ),
    "tiny": SRTrainConfig(
        model=transmrsr_model.PRESETS["tiny"],
        pairs=PairConfig(factor_range=(2.0, 6.0), patch_size=32),
        batch_size=4,
        samples_per_epoch=16,
        max_epochs=3,
        perceptual="discriminator",
        content_weight=0.0,
        style_weight=0.0,
        val_max_planes=8,
        checkpoint_every=2,
        log_every=1,
    ),
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TransMRSRError(f"{path}: cannot read the config ({exc})") from None
    if not isinstance(raw, dict):
        raise TransMRSRError(f"{path}: a config file holds a JSON object")
    return raw


def _from_dict(cls: type, raw: Mapping[str, Any], stage: str, source: str) -> Any:
    raw = dict(raw)
    found = raw.pop("stage", stage)
    if found != stage:
        raise TransMRSRError(f"{source}: a {found!r} config, expected a {stage!r} config")
    known = {f.name for f in fields(cls)}
    unknown = sorted(raw.keys() - known)
    if unknown:
        raise TransMRSRError(f"{source}: unknown config fields {unknown}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise TransMRSRError(f"{source}: invalid config ({exc})") from None


def resolve_config(name_or_path: str | os.PathLike[str], stage: str) -> Any:
    """A preset by name, or a JSON config file (e.g. a run's saved ``config.json``)."""
    presets, cls = (
        (PRIOR_PRESETS, PriorTrainConfig) if stage == "prior" else (SR_PRESETS, SRTrainConfig)
    )
    key = str(name_or_path)
    if key in presets:
        return presets[key]
    path = Path(key)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise TransMRSRError(f"{path}: no such config file")
        return _from_dict(cls, _read_json(path), stage, str(path))
    raise TransMRSRError(
        f"unknown config {key!r}; choose one of {', '.join(presets)} or give a .json file"
    )


def config_from_dict(raw: Mapping[str, Any]) -> PriorTrainConfig | SRTrainConfig:
    """Rebuild a config saved by ``to_dict`` (its ``stage`` field says which)."""
    stage = raw.get("stage")
    if stage == "prior":
        return _from_dict(PriorTrainConfig, raw, "prior", "checkpoint")
    if stage == "sr":
        return _from_dict(SRTrainConfig, raw, "sr", "checkpoint")
    raise TransMRSRError(f"not a training config (stage {stage!r})")


def sr_preset(name: str, arch: str = "transmrsr") -> SRTrainConfig:
    """The stage-2 preset ``name`` for network ``arch``.

    Baselines keep the preset's data, batch, schedule and validation, take their own network
    preset of the same name, and train with L1 only (as they were published): the SPEC's
    content and style terms belong to TransMRSR.
    """
    if name not in SR_PRESETS:
        raise TransMRSRError(f"unknown config {name!r}; choose one of {', '.join(SR_PRESETS)}")
    config = SR_PRESETS[name]
    if arch == "transmrsr":
        return config
    model = registry.get_config(arch, name)
    return replace(config, arch=arch, model=model, content_weight=0.0, style_weight=0.0)


def with_overrides(config: Any, **overrides: Any) -> Any:
    """``config`` with the non-``None`` overrides applied (and validated)."""
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if not chosen:
        return config
    try:
        return replace(config, **chosen)
    except (TypeError, ValueError) as exc:
        raise TransMRSRError(f"invalid option ({exc})") from None
