"""The paper's comparison (SPEC section 7, Tables 1-3) on your data, one protocol for all.

Every learned method is trained by the same stage-2 pipeline (:func:`~transmrsr.training.sr.
train_sr`) on the same subjects, pairs, batch and budget, and then restores the same held-out
volumes the same way; cubic interpolation is the floor. The held-out volumes are the test
subjects of the split plus, by default, the MNI152 template (never trained on). Each is degraded
along the thick axis by each factor (SPEC degradation), restored onto the isotropic grid and
scored with :func:`~transmrsr.evaluation.compare.compare_volumes` (paper protocol and
brain-masked PSNR/SSIM) and, where a brain mask is known and ANTsPy is installed, with the Dice
of Atropos GM/WM/CSF segmentations of restored vs reference (Table 3).

TransMRSR's ablations (SPEC section 7) are methods too: ``transmrsr-noprior`` (decoder not
initialised from the prior), ``-nosdt``, ``-nomref``, ``-noskip``. The TransMRSR rows share one
StyleSwin prior (``prior``; or one trained here for ``prior_steps``). GFP-GAN (Wang et al.
2021) loads a StyleGAN2 prior instead (``stylegan2_prior``; or one trained here, as
``train-prior --arch stylegan2`` does, on the same training volumes for the same
``prior_steps``, in ``OUT/runs/prior-stylegan2``). Learned methods are trained once over the
factor range of the benchmark, so a model serves every factor (SPEC trains one per factor; the
budget here is for one).

A benchmark is resumable: each method's run lives in ``OUT/runs/NAME`` and a finished one is
not retrained; a killed one continues from its checkpoint (its wall-time clock restarts).
Each restored and scored (volume, factor, method) is kept in ``OUT/scores`` and reused while
the settings are unchanged, so rerunning after a crash, or to retitle the report, is quick.

MINet (multi-contrast SR, Feng et al. 2021) restores a thick plane with a guide plane of
another contrast of the same head, so it trains as ``transmrsr train --arch minet
--guide-contrast`` does, on guided synthetic heads made from label maps (``synthetic``), and is
scored on held-out guided synthetic heads (``synth-head-N``) made from the anatomies its
training keeps out: each a volume in the synthetic contrast, made thick, with its guide.
Every method restores those volumes too (the unguided ones without the guide), so MINet's rows
compare on the same volumes; it has no score on the real held-out volumes, which have no guide.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transmrsr.degradation import degrade
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.compare import compare_volumes
from transmrsr.evaluation.metrics import auto_brain_mask
from transmrsr.evaluation.segmentation import (
    INSTALL_HINT,
    atropos_available,
    segment_tissues,
    tissue_dice,
)
from transmrsr.geometry import grid_overlap, resolve_axis
from transmrsr.inference.restore import (
    LoadedModel,
    guide_channels,
    load_model,
    restore_volume,
)
from transmrsr.interpolation import upsample
from transmrsr.io import Volume, atomic_path, load_volume, voxel_sizes
from transmrsr.models.registry import prior_of
from transmrsr.training.centroids import add_centroids_to_prior
from transmrsr.training.checkpoint import load_prior_for
from transmrsr.training.config import prior_preset, sr_preset, with_overrides
from transmrsr.training.data import read_record
from transmrsr.training.distributed import DistContext
from transmrsr.training.prior import train_prior
from transmrsr.training.runs import RunData, prepare_out, write_json
from transmrsr.training.sr import guided_config, train_sr
from transmrsr.training.synthetic import (
    CONTRASTS,
    HeadConfig,
    LabelTables,
    SyntheticConfig,
    discover_label_maps,
    generate_pool,
    split_label_maps,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """A row of the comparison: a network (``arch``; ``None`` = cubic interpolation) and the
    TransMRSR config switches of an ablation; ``guided``: the network takes a guide of another
    contrast (trained and scored on guided synthetic heads only)."""

    name: str
    label: str
    arch: str | None
    ablation: dict[str, bool] = field(default_factory=dict)
    guided: bool = False

    @property
    def prior(self) -> str | None:
        """The generative prior the network loads (``styleswin``, ``stylegan2``), if any."""
        return prior_of(self.arch) if self.arch is not None else None

    @property
    def needs_prior(self) -> bool:
        return self.prior is not None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cubic", "Cubic", None),
        Method("edsr", "EDSR", "edsr"),
        Method("swinir", "SwinIR", "swinir"),
        Method("restormer", "Restormer", "restormer"),
        Method("gfpgan", "GFP-GAN", "gfpgan"),
        Method("transmrsr", "TransMRSR", "transmrsr"),
        Method("transmrsr-noprior", "TransMRSR w/o prior", "transmrsr", {"use_prior": False}),
        Method("transmrsr-nosdt", "TransMRSR w/o SDT", "transmrsr", {"use_sdt": False}),
        Method("transmrsr-nomref", "TransMRSR w/o MREF", "transmrsr", {"use_mref": False}),
        Method("transmrsr-noskip", "TransMRSR w/o skip", "transmrsr", {"use_skip": False}),
        Method("minet", "MINet", "minet", guided=True),
    )
}
ABLATIONS = tuple(name for name in METHODS if name.startswith("transmrsr-"))
GUIDED = tuple(name for name, m in METHODS.items() if m.guided)
#: Added to the seed for the held-out guided heads, so that they are neither the training
#: pool's heads nor the guided run's validation heads (``VALIDATION_SEED_OFFSET``).
HELD_OUT_SEED_OFFSET = 200_017
#: The name of the ``i``-th held-out guided synthetic head.
SYNTH_HEAD = "synth-head-{}"
#: Settings that only matter for guided methods (left out of the score cache's stamp without them).
SYNTHETIC_SETTINGS = (
    "synthetic",
    "synthetic_contrast",
    "guide_contrast",
    "synthetic_count",
    "synthetic_val_maps",
    "synthetic_heads",
)


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """Method names from ``"cubic,edsr,..."`` (or a list); ``all`` = every method."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["all"]:
        return tuple(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise TransMRSRError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(METHODS)} or all"
        )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything that defines a benchmark (saved as ``OUT/settings.json``).

    Attributes:
        preset: stage-2 (and stage-1) preset for every method (``compact`` on a CPU).
        factors: thick/thin factors scored; models train on their range.
        methods: method names (:data:`METHODS`).
        budget_steps, budget_minutes: the same training budget for every learned method: a
            number of steps (same batch for all), or minutes of wall time; at least one.
        prior: prior file (with SDT centroids) for the TransMRSR rows; without one a prior is
            trained here for ``prior_steps`` steps on the training subjects.
        prior_steps: steps of every prior trained here (StyleSwin without ``prior``, StyleGAN2
            without ``stylegan2_prior``), so that both priors have the same training.
        stylegan2_prior: StyleGAN2 prior file (``train-prior --arch stylegan2``) for the
            GFP-GAN row; without one it is trained here for ``prior_steps`` steps on the
            training subjects.
        thick_axis: anatomical axis made thick (``SI``: axial acquisitions).
        planes: ``one`` or ``both`` planes through the thick axis at restoration.
        include_mni: also score the MNI152 template (with its brain mask).
        skull_stripped: the test volumes are brain-extracted, so their foreground is the brain
            mask and tissue Dice is computed for them too.
        samples_per_epoch: planes per epoch (validation cadence), ``None`` = preset's.
        seed: split, training and degradation randomness.
        synthetic: folder of label maps and tables (``train --synthetic``) for the guided
            methods (MINet): they train on guided synthetic heads alone and are scored on
            ``synthetic_heads`` held-out guided heads. ``all`` without it leaves them out.
        synthetic_contrast: contrast of the synthetic heads made thick (``t1`` or ``random``).
        guide_contrast: contrast of their guides.
        synthetic_count: heads in the guided training pool (``train --synthetic-count``).
        synthetic_val_maps: label maps kept out of that pool (``train --synthetic-val-maps``):
            one validation head and the held-out heads are made from them.
        synthetic_heads: held-out guided heads scored (every method restores them).
    """

    preset: str = "compact"
    factors: tuple[float, ...] = (4.0, 8.0)
    methods: tuple[str, ...] | str = "all"
    budget_steps: int | None = None
    budget_minutes: float | None = None
    prior: str | None = None
    prior_steps: int = 300
    stylegan2_prior: str | None = None
    thick_axis: str = "SI"
    planes: str = "one"
    include_mni: bool = True
    skull_stripped: bool = False
    samples_per_epoch: int | None = None
    seed: int = 0
    synthetic: str | None = None
    synthetic_contrast: str = "t1"
    guide_contrast: str = "t1"
    synthetic_count: int = 40
    synthetic_val_maps: int = 2
    synthetic_heads: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", tuple(sorted(float(f) for f in self.factors)))
        raw = [self.methods] if isinstance(self.methods, str) else list(self.methods)
        every = [n.strip().lower() for n in raw] == ["all"]
        methods = parse_methods(self.methods)
        guided = [m for m in methods if METHODS[m].guided]
        if guided and self.synthetic is None:
            labels = ", ".join(METHODS[m].label for m in guided)
            if not every:
                raise TransMRSRError(
                    f"{labels} trains and is scored on guided synthetic heads: give "
                    "--synthetic LABELS_DIR (label maps and tables, as for train --synthetic)"
                )
            log.warning("%s left out: it needs --synthetic LABELS_DIR (guided heads)", labels)
            methods = tuple(m for m in methods if m not in guided)
        object.__setattr__(self, "methods", methods)
        for name in ("synthetic_contrast", "guide_contrast"):
            if getattr(self, name) not in CONTRASTS:
                raise TransMRSRError(
                    f"{name.replace('_', ' ')} must be one of {', '.join(CONTRASTS)}, got "
                    f"{getattr(self, name)!r}"
                )
        if self.synthetic_count < 1 or self.synthetic_val_maps < 1 or self.synthetic_heads < 1:
            raise TransMRSRError(
                "synthetic count, kept-out label maps and held-out heads must be at least 1"
            )
        if not self.factors or any(not 1.0 < f <= 16.0 for f in self.factors):
            raise TransMRSRError(f"factors must be in (1, 16], got {self.factors}")
        learned = any(METHODS[m].arch for m in self.methods)
        if learned and self.budget_steps is None and self.budget_minutes is None:
            raise TransMRSRError("give a training budget: --budget-steps N or --budget-minutes M")
        if (self.budget_steps is not None and self.budget_steps < 1) or (
            self.budget_minutes is not None and self.budget_minutes <= 0
        ):
            raise TransMRSRError("the budget must be positive")
        if self.planes not in ("one", "both"):
            raise TransMRSRError(f"planes must be one or both, got {self.planes!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def guided(self) -> bool:
        """Whether guided methods are benchmarked (and guided heads scored)."""
        return any(METHODS[m].guided for m in self.methods)


def synthetic_config(settings: BenchmarkSettings) -> SyntheticConfig:
    """The guided methods' synthetic heads with their guides, as ``train --synthetic LABELS
    --synthetic-ratio 1 --synthetic-val-heads 1 --guide-contrast C`` makes them; the label
    folder is checked here, before anything is trained."""
    if settings.synthetic is None:
        raise TransMRSRError("guided methods need synthetic heads (--synthetic LABELS_DIR)")
    LabelTables.load(settings.synthetic)
    maps = discover_label_maps(settings.synthetic)
    split_label_maps(maps, settings.synthetic_val_maps, settings.seed)  # enough maps to train
    return SyntheticConfig(
        labels=str(Path(settings.synthetic).resolve()),
        ratio=1.0,
        count=settings.synthetic_count,
        val_maps=settings.synthetic_val_maps,
        val_heads=1,
        head=HeadConfig(contrast=settings.synthetic_contrast),
        guide=HeadConfig(contrast=settings.guide_contrast),
    )


@dataclass
class HeldOutVolume:
    """A held-out reference volume with its brain mask (``None``: automatic foreground) and,
    for a guided synthetic head, its guide (another contrast of the same head)."""

    name: str
    volume: Volume
    mask: Volume | None
    contrast: str = "T1"
    guide: Volume | None = None


def held_out_volumes(data: RunData, settings: BenchmarkSettings) -> list[HeldOutVolume]:
    """The split's test subjects (with a ``*_brainmask``/``*_mask`` file beside them when there
    is one) and the MNI152 template."""
    volumes = []
    for record in data.test:
        volume = read_record(record)
        mask = _mask_beside(Path(record.path)) if record.member is None else None
        if mask is None and settings.skull_stripped:
            mask = volume.with_data((volume.data > 0).astype(np.float32))
        volumes.append(HeldOutVolume(Path(record.name).name, volume, mask, record.contrast))
    if settings.include_mni:
        from transmrsr.templates import mni152_brain_mask, mni152_t1

        volumes.append(HeldOutVolume("MNI152", mni152_t1(), mni152_brain_mask()))
    if not volumes and not settings.guided:
        raise TransMRSRError("no held-out volumes: the split has no test subjects (see --test)")
    return volumes


def guided_heads(settings: BenchmarkSettings, cache: Path | None = None) -> list[HeldOutVolume]:
    """``synthetic_heads`` held-out guided synthetic heads (``synth-head-N``), made as the
    guided run's validation heads are (:func:`~transmrsr.training.synthetic.generate_pool` over
    the label maps its pool keeps out) with another seed: anatomies no method trained on, and
    draws that did not choose MINet's checkpoint. Raw intensities, as the real volumes."""
    config = synthetic_config(settings)
    _, kept = split_label_maps(discover_label_maps(config.labels), config.val_maps, settings.seed)
    images, affines = generate_pool(
        kept,
        LabelTables.load(config.labels),
        config.head,
        settings.synthetic_heads,
        settings.seed + HELD_OUT_SEED_OFFSET,
        cache=cache,
        guide=config.guide,
        misalignment=(config.guide_shift_voxels, config.guide_rotate_degrees),
    )
    return [
        HeldOutVolume(
            SYNTH_HEAD.format(i),
            Volume(data=image[0], affine=affine),
            None,
            settings.synthetic_contrast.upper(),
            guide=Volume(data=image[1], affine=affine),
        )
        for i, (image, affine) in enumerate(zip(images, affines, strict=True))
    ]


def crop_to_head(test: HeldOutVolume, margin: int = 6) -> HeldOutVolume:
    """The volume (and mask) cropped to the head's bounding box plus ``margin`` voxels.

    Background outside the head carries no score (masked metrics ignore it, the paper
    protocol pads slices with zeros anyway) but costs restoration time for every method.
    """
    head = auto_brain_mask(test.volume.data)
    if test.mask is not None:
        head |= test.mask.data > 0.5
    if not head.any():
        return test
    box = tuple(
        slice(max(0, int(np.min(ix)) - margin), min(n, int(np.max(ix)) + margin + 1))
        for ix, n in zip(np.nonzero(head), head.shape, strict=True)
    )
    affine = test.volume.affine.copy()
    start = np.array([b.start for b in box], dtype=np.float64)
    affine[:3, 3] = test.volume.affine[:3, :3] @ start + test.volume.affine[:3, 3]

    def crop(v: Volume) -> Volume:
        return v.with_data(np.ascontiguousarray(v.data[box]), affine)

    mask = crop(test.mask) if test.mask is not None else None
    # The guide stays whole: restoration registers it onto the scan in world coordinates.
    return dataclasses.replace(test, volume=crop(test.volume), mask=mask)


def _mask_beside(path: Path) -> Volume | None:
    stem = path.name.split(".")[0]
    for suffix in ("_brainmask", "_mask"):
        for ext in (".nii.gz", ".nii", ".mgz"):
            candidate = path.with_name(stem + suffix + ext)
            if candidate.is_file():
                return load_volume(candidate)
    return None


# ------------------------------------------------------------------------------- training
#: Per prior: the setting that gives its file (``--prior``, ``--stylegan2-prior``), the run
#: folder of one trained here, and the network that loads it.
PRIOR_SOURCES: dict[str, tuple[str, str, str]] = {
    "styleswin": ("prior", "prior", "transmrsr"),
    "stylegan2": ("stylegan2_prior", "prior-stylegan2", "gfpgan"),
}


def _given_prior(settings: BenchmarkSettings, arch: str) -> Path | None:
    """The prior file of ``arch`` the settings give (checked: it exists and is of ``arch``)."""
    given = getattr(settings, PRIOR_SOURCES[arch][0])
    if given is None:
        return None
    path = Path(given)
    if not path.is_file():
        raise TransMRSRError(f"{path}: no such prior file")
    load_prior_for(path, PRIOR_SOURCES[arch][2])  # a prior of the other kind: one line
    return path


def _prepare_prior(
    data: RunData,
    settings: BenchmarkSettings,
    out: Path,
    ctx: DistContext,
    progress: bool,
    arch: str = "styleswin",
) -> Path:
    """The ``arch`` prior of the benchmark: the given file, or one trained here (in
    ``OUT/runs/prior`` or ``OUT/runs/prior-stylegan2``) for ``prior_steps`` steps on the
    training subjects, resumed when interrupted and reused when finished. A StyleSwin prior
    gets its SDT centroids."""
    given = _given_prior(settings, arch)
    if given is not None:
        return given
    run = out / "runs" / PRIOR_SOURCES[arch][1]
    final = run / "prior.safetensors"
    done = run / "centroids.done"  # the StyleSwin prior's centroids are in the file
    needs_centroids = arch == "styleswin"
    if final.is_file() and (done.is_file() or not needs_centroids):
        return final
    if not final.is_file():
        resume_from = prepare_out(run, resume=(run / "last.pt").is_file())
        config = with_overrides(
            prior_preset(settings.preset, arch), steps=settings.prior_steps, seed=settings.seed
        )
        log.info("training the %s prior for %d steps", arch, settings.prior_steps)
        train_prior(data, config, run, ctx, resume_from=resume_from, progress=progress)
    if needs_centroids:
        add_centroids_to_prior(final, seed=settings.seed)
        done.write_text("ok\n")
    return final


def _warn_unequal_priors(settings: BenchmarkSettings, priors: dict[str, Path]) -> None:
    """Say so when a given StyleSwin prior trained for other than the ``prior_steps`` a
    StyleGAN2 prior trained here gets."""
    if settings.prior is None or settings.stylegan2_prior is not None or "stylegan2" not in priors:
        return
    steps = load_prior_for(priors["styleswin"], "transmrsr")[2].get("steps")
    if steps is not None and int(steps) != settings.prior_steps:
        log.warning(
            "the StyleGAN2 prior trains for %d steps (--prior-steps), the given StyleSwin prior "
            "trained for %d: give --prior-steps %d to train both alike",
            settings.prior_steps,
            int(steps),
            int(steps),
        )


def train_method(
    method: Method,
    data: RunData,
    settings: BenchmarkSettings,
    out: Path,
    ctx: DistContext,
    prior: Path | None,
    progress: bool,
) -> dict[str, Any]:
    """Train (or finish training) one method (``prior``: the file of the prior it loads, if
    any); returns what it cost."""
    assert method.arch is not None
    run = out / "runs" / method.name
    record = run / "trained.json"
    if record.is_file():
        return json.loads(record.read_text())
    config = sr_preset(settings.preset, method.arch)
    if method.ablation:
        config = with_overrides(config, model=dataclasses.replace(config.model, **method.ablation))
    if method.guided:
        # As `train --arch minet --synthetic DIR --synthetic-ratio 1 --synthetic-val-heads 1
        # --guide-contrast C` makes it; train_sr's check_guided refuses a config that cannot
        # give the run its guided heads.
        config = guided_config(
            with_overrides(config, synthetic=synthetic_config(settings)), settings.guide_contrast
        )
    pairs = dataclasses.replace(
        config.pairs,
        factor_range=(settings.factors[0], settings.factors[-1]),
        thick_axis=settings.thick_axis,
    )
    config = with_overrides(
        config,
        pairs=pairs,
        val_factors=settings.factors,
        seed=settings.seed,
        samples_per_epoch=settings.samples_per_epoch,
    )
    if settings.budget_steps is not None:  # enough epochs that the budget, not the cap, ends it
        per_epoch = max(1, (config.samples_per_epoch or 1) // config.batch_size)
        epochs = -(-settings.budget_steps // per_epoch)
        config = with_overrides(config, max_epochs=max(config.max_epochs, epochs))
    resume = (run / "last.pt").is_file()
    resume_from = prepare_out(run, resume=resume)
    log.info("training %s (%s)", method.label, "resumed" if resume else "new run")
    result = train_sr(
        data,
        config,
        run,
        ctx,
        prior_path=prior if method.needs_prior else None,
        resume_from=resume_from,
        stop_after=settings.budget_steps,
        max_seconds=settings.budget_minutes * 60 if settings.budget_minutes else None,
        progress=progress,
    )
    weights = (config.content_weight, config.style_weight)
    cost = {
        "loss": "L1"
        if weights == (0.0, 0.0)
        else f"L1 + {weights[0]:g} content + {weights[1]:g} style ({config.perceptual})",
        "steps": result.steps,
        "seconds": result.seconds,
        "epochs": result.epochs,
        "best_val_psnr": result.best_psnr,
        "stopped_early": result.stopped_early,
        "model": str(model_path(run)),
    }
    write_json(record, cost)
    return cost


def model_path(run: Path) -> Path:
    """The best-validation model of a run, or its newest when no epoch ended."""
    best = run / "model_best.safetensors"
    return best if best.is_file() else run / "model_last.safetensors"


# ------------------------------------------------------------------------------- scoring
def _overlap_data(pred: Volume, ref: Volume) -> tuple[np.ndarray, tuple[slice, ...]]:
    overlap = grid_overlap(pred.shape, pred.affine, ref.shape, ref.affine)
    if overlap is None:  # restore_volume and upsample share one grid: this cannot happen
        raise TransMRSRError("restored volume is not on the reference grid")
    return pred.data[overlap.a_slices], overlap.b_slices


def score_volume(
    test: HeldOutVolume,
    factor: float,
    restorers: dict[str, Restorer],
    settings: BenchmarkSettings,
    segment: bool,
    cache: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Degrade ``test`` by ``factor``, restore it with every method and score each.

    Returns one row per method and the restored arrays on the reference's grid (for figures).
    A guided head's guide goes to every restorer; one that cannot restore the volume (a guided
    network, for a volume without a guide) returns ``None`` and has no row.
    With ``cache`` (a folder), each method's row and restored array are kept there and reused
    by a later call with the same settings, so an interrupted or re-titled benchmark does not
    restore and segment everything again.
    """
    ref = test.volume
    axis = resolve_axis(settings.thick_axis, ref.affine)
    lr_data, lr_affine = degrade(ref.data, ref.affine, axis, factor)
    lr = ref.with_data(lr_data, lr_affine)
    ref_labels = None
    rows, images = [], {}
    for name, restore in restorers.items():
        key = f"{test.name}_x{factor:g}_{name}"
        cached = _read_cached_score(cache, key, settings, segment) if cache else None
        if cached is not None:
            row, images[name] = cached
            rows.append(row)
            continue
        if segment and test.mask is not None and ref_labels is None:
            ref_labels = segment_tissues(
                ref.data, test.mask.data > 0.5, voxel_sizes(ref.affine), contrast=test.contrast
            )
        t0 = time.perf_counter()
        pred = restore(lr, axis, factor, test.guide)
        seconds = time.perf_counter() - t0
        if pred is None:
            continue
        scores = compare_volumes(pred, ref, mask=test.mask, thick_axis=axis)
        row: dict[str, Any] = {
            "volume": test.name,
            "factor": factor,
            "method": name,
            "seconds": seconds,
            **scores.to_dict(),
        }
        if test.guide is not None:
            row["guided_head"] = True
        data, ref_slices = _overlap_data(pred, ref)
        full = np.zeros_like(ref.data)
        full[ref_slices] = data
        images[name] = full
        if ref_labels is not None:
            labels = segment_tissues(
                full, test.mask.data > 0.5, voxel_sizes(ref.affine), contrast=test.contrast
            )
            row.update({f"dice_{k}": v for k, v in tissue_dice(labels, ref_labels).items()})
        rows.append(row)
        if cache is not None:
            _write_cached_score(cache, key, settings, segment, row, full)
        log.info(
            "%s x%g %s: paper %.2f dB, masked %.2f dB%s (%.0f s)",
            test.name,
            factor,
            name,
            row["psnr_paper"],
            row["psnr_masked"],
            f", Dice GM {row['dice_gm']:.3f}" if "dice_gm" in row else "",
            seconds,
        )
    return rows, images


def _cache_stamp(settings: BenchmarkSettings, segment: bool) -> dict[str, Any]:
    """What a cached score depends on beyond its (volume, factor, method) key: adding a method
    or a factor keeps the other scores. The preset's training config is part of it, so a
    preset changed by a new version of the package is not mistaken for the one scored."""
    skip = ["methods", "factors", *(() if settings.guided else SYNTHETIC_SETTINGS)]
    if settings.stylegan2_prior is None or "gfpgan" not in settings.methods:
        skip.append("stylegan2_prior")  # (stamps made before the option keep matching)
    kept = {k: v for k, v in settings.to_dict().items() if k not in skip}
    training = sr_preset(settings.preset).to_dict()
    return {"settings": kept, "training": training, "segmented": segment}


def _read_cached_score(
    cache: Path, key: str, settings: BenchmarkSettings, segment: bool
) -> tuple[dict[str, Any], np.ndarray] | None:
    """A row and restored array saved by an earlier run with the same settings, or None."""
    row_file, array_file = cache / f"{key}.json", cache / f"{key}.npy"
    if not (row_file.is_file() and array_file.is_file()):
        return None
    try:
        saved = json.loads(row_file.read_text())
        if saved.get("stamp") != json.loads(json.dumps(_cache_stamp(settings, segment))):
            return None
        return saved["row"], np.load(array_file)
    except (OSError, ValueError, KeyError):
        log.warning("%s: unreadable cached score; restoring again", row_file)
        return None


def _write_cached_score(
    cache: Path,
    key: str,
    settings: BenchmarkSettings,
    segment: bool,
    row: dict[str, Any],
    image: np.ndarray,
) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache / f"{key}.npy", suffix=".npy") as tmp:
        np.save(tmp, image.astype(np.float32))
    write_json(cache / f"{key}.json", {"stamp": _cache_stamp(settings, segment), "row": row})


#: ``restore(thick volume, thick axis, factor, guide or None)``: the restored volume, or
#: ``None`` where the method cannot restore it (a guided network without a guide).
Restorer = Callable[[Volume, int, float, Volume | None], Volume | None]


def _cubic(lr: Volume, axis: int, factor: float, guide: Volume | None = None) -> Volume:
    data, affine = upsample(lr.data, lr.affine, axis, factor, "cubic")
    return lr.with_data(data, affine)


def _restorer(model: LoadedModel, planes: str, device: torch.device) -> Restorer:
    guided = guide_channels(model.network) > 0

    def restore(lr: Volume, axis: int, factor: float, guide: Volume | None) -> Volume | None:
        if guided and guide is None:
            return None
        # The networks alone, as the paper compares them: no data-consistency projection, no
        # adaptation to the scan, no guide branch fitted to it (a guided network is given the
        # guide, the others ignore it), and exact fp32 so that scores do not depend on the CPU.
        result = restore_volume(
            lr,
            model,
            axis=axis,
            factor=factor,
            planes=planes,
            device=device,
            consistency=False,
            precision="fp32",
            guide=guide if guided else None,
            guide_fit=None,
        )
        return result.volume

    return restore


def hardware() -> dict[str, Any]:
    """What the numbers were measured on."""
    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass
class BenchmarkResult:
    settings: BenchmarkSettings
    rows: list[dict[str, Any]]
    training: dict[str, dict[str, Any]]
    dice: str  # "computed", or why not
    hardware: dict[str, Any]
    seconds: float
    figures: dict[str, str] = field(default_factory=dict)
    priors: dict[str, str] = field(default_factory=dict)  # prior arch -> its file

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "rows": self.rows,
            "training": self.training,
            "dice": self.dice,
            "hardware": self.hardware,
            "seconds": self.seconds,
            "figures": self.figures,
            "priors": self.priors,
        }


def run_benchmark(
    data: RunData,
    settings: BenchmarkSettings,
    out: Path,
    ctx: DistContext,
    *,
    progress: bool = True,
    figure_hook: Callable[[HeldOutVolume, float, dict[str, np.ndarray]], dict[str, str]]
    | None = None,
) -> BenchmarkResult:
    """Train every learned method, restore every held-out volume, score everything.

    ``figure_hook(test, factor, images)`` is called for the first held-out volume (and the
    first guided head) at each factor with the restored arrays (reference grid) and returns
    figure paths to record. With guided methods, the held-out guided synthetic heads
    (:func:`guided_heads`) are scored after the real volumes.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "settings.json", settings.to_dict())
    data.split.save(out / "split.json")
    methods = [METHODS[m] for m in settings.methods]
    if settings.guided:
        synthetic_config(settings)  # a wrong label folder fails before any training
    needed = list(dict.fromkeys(m.prior for m in methods if m.prior is not None))
    for arch in needed:
        _given_prior(settings, arch)  # a wrong prior file fails before any training
    priors = {arch: _prepare_prior(data, settings, out, ctx, progress, arch) for arch in needed}
    _warn_unequal_priors(settings, priors)
    training = {}
    restorers: dict[str, Restorer] = {}
    for method in methods:
        if method.arch is None:
            restorers[method.name] = _cubic
            continue
        prior = priors.get(method.prior) if method.prior is not None else None
        cost = train_method(method, data, settings, out, ctx, prior, progress)
        model = load_model(cost["model"])
        cost["parameters"] = sum(p.numel() for p in model.network.parameters())
        training[method.name] = cost
        restorers[method.name] = _restorer(model, settings.planes, ctx.device)
    segment = atropos_available()
    dice = "computed with ANTs Atropos" if segment else INSTALL_HINT
    if not segment:
        log.warning("%s; Dice columns are left out", INSTALL_HINT)
    rows: list[dict[str, Any]] = []
    figures: dict[str, str] = {}
    real = held_out_volumes(data, settings)
    heads = guided_heads(settings, cache=out / "synthetic-heads") if settings.guided else []
    for i, full in enumerate([*real, *heads]):
        test = crop_to_head(full)
        for factor in settings.factors:
            new_rows, images = score_volume(
                test, factor, restorers, settings, segment, cache=out / "scores"
            )
            rows.extend(new_rows)
            if i in (0, len(real)) and figure_hook is not None:
                figures.update(figure_hook(test, factor, images))
    return BenchmarkResult(
        settings=settings,
        rows=rows,
        training=training,
        dice=dice,
        hardware=hardware(),
        seconds=time.perf_counter() - start,
        figures=figures,
        priors={arch: str(path) for arch, path in priors.items()},
    )
