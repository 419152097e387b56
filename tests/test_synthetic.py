"""Synthetic heads from label maps: priors, label-preserving deformation, seeds, bad input,
and training on a mix of real volumes and synthetic heads (exact resume included)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import oriented_affine, phantom

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.intensity import IntensityScaler
from transmrsr.models.files import load_checkpoint
from transmrsr.models.registry import build_model
from transmrsr.pairs import PairConfig
from transmrsr.training.config import SR_PRESETS, resolve_config, with_overrides
from transmrsr.training.data import PairDataset
from transmrsr.training.distributed import DistContext
from transmrsr.training.runs import prepare_out, select_data
from transmrsr.training.sr import ValidationSet, train_sr
from transmrsr.training.synthetic import (
    T1_PRIOR_COLUMN,
    VALIDATION_SEED_OFFSET,
    HeadConfig,
    LabelTables,
    MixedDataset,
    SyntheticConfig,
    class_intensities,
    deform_labels,
    discover_label_maps,
    generate_pool,
    load_label_map,
    split_label_maps,
    synthesize_head,
    validation_heads,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHARED_LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "labels"
#: The labels of the test head, in the order the tables list them.
LABELS = np.array([0, 24, 515, 511, 2, 3, 4, 41, 42, 43])
#: Random-contrast classes: the hemispheres' tissues share a class, as in SynthSeg's table.
CLASSES = np.array([0, 1, 2, 3, 4, 5, 6, 4, 5, 6])
#: Random contrast with no voxel spread, blur, bias, gamma or noise: the image is the class
#: draws, scaled.
PLAIN = HeadConfig(
    contrast="random",
    blur_range=(0.0, 0.0),
    bias_std=0.0,
    gamma_std=0.0,
    noise_range=(0.0, 0.0),
    std_range=(0.0, 0.0),
)


def head_labels(shape=(40, 44, 36)) -> np.ndarray:
    """Nested ellipsoids: scalp, skull, CSF, cortex, white matter and ventricles, two
    hemispheres along the first axis."""
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.asarray(shape) - 1) / 2
    r = np.sqrt(sum(((g - c) / (n / 2)) ** 2 for g, c, n in zip(grid, centre, shape, strict=True)))
    left = grid[0] < centre[0]
    labels = np.zeros(shape, np.int32)
    labels[r < 0.95] = 511
    labels[r < 0.85] = 515
    labels[r < 0.75] = 24
    labels[r < 0.65] = np.where(left, 3, 42)[r < 0.65]
    labels[r < 0.5] = np.where(left, 2, 41)[r < 0.5]
    labels[r < 0.18] = np.where(left, 4, 43)[r < 0.18]
    return labels


def write_tables(folder: Path, n_columns: int = 25, seed: int = 0) -> Path:
    """Tables in SynthSeg's layout: the test labels, their classes and T1 priors whose
    columns are well apart (means 10 * column + 20, spreads 2; stds 3, spreads 0.5)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "generation_labels.npy", LABELS)
    np.save(folder / "generation_classes.npy", CLASSES)
    columns = np.arange(n_columns, dtype=np.float64)
    np.save(folder / "prior_means_t1.npy", np.stack([10 * columns + 20, np.full(n_columns, 2.0)]))
    np.save(
        folder / "prior_stds_t1.npy", np.stack([np.full(n_columns, 3.0), np.full(n_columns, 0.5)])
    )
    return folder


def write_label_maps(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        labels = np.roll(head_labels(), i, axis=1).astype(np.float32)
        nib.save(nib.Nifti1Image(labels, oriented_affine("LIA")), folder / f"seg_{i:02d}.nii.gz")
    return folder


def write_subjects(folder: Path, count: int) -> Path:
    """``count`` phantom T1 subjects in BIDS names, for training and validation."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        volume = phantom((36, 40, 30), seed=i)
        nib.save(nib.Nifti1Image(volume, oriented_affine("LAS")), folder / f"sub-0{i}_T1w.nii.gz")
    return folder


@pytest.fixture
def tables(tmp_path) -> LabelTables:
    return LabelTables.load(write_tables(tmp_path / "labels"))


# ----------------------------------------------------------------------------- intensities


def test_class_draws_follow_the_t1_priors(tables):
    # Over many heads, each label's class mean is distributed as its prior column says.
    rng = np.random.default_rng(0)
    draws = np.stack([class_intensities(tables, HeadConfig(), rng)[0] for _ in range(4000)])
    expected = tables.prior_means[0][tables.t1_classes]
    np.testing.assert_allclose(draws.mean(axis=0), expected, atol=0.15)
    np.testing.assert_allclose(draws.std(axis=0), 2.0, rtol=0.06)


def test_labels_of_one_class_share_their_draw(tables):
    rng = np.random.default_rng(1)
    means, _ = class_intensities(tables, HeadConfig(contrast="random"), rng)
    row = {int(v): i for i, v in enumerate(LABELS)}
    assert means[row[2]] == means[row[41]] and means[row[3]] == means[row[42]]
    assert means[row[2]] != means[row[3]]
    # T1-like: both hemispheres' white matter take the same prior column, so one draw.
    t1, _ = class_intensities(tables, HeadConfig(), rng)
    assert t1[row[2]] == t1[row[41]]


def test_random_contrast_is_uniform_with_a_dark_background(tables):
    rng = np.random.default_rng(2)
    config = HeadConfig(contrast="random")
    draws = np.stack([class_intensities(tables, config, rng)[0] for _ in range(3000)])
    tissue = draws[:, 1:]
    assert tissue.min() >= 0 and tissue.max() <= 255
    np.testing.assert_allclose(tissue.mean(axis=0), 127.5, atol=5)
    np.testing.assert_allclose(tissue.std(axis=0), 255 / np.sqrt(12), rtol=0.05)
    assert draws[:, 0].max() <= config.background_max


def test_generated_image_holds_the_drawn_intensities(tables):
    # With artefacts off, every voxel of a label has its class mean (the image is scaled by
    # its 99th percentile, so compare ratios of labels against the drawn ones).
    labels = head_labels()
    image, moved = synthesize_head(labels, tables, PLAIN, seed=5, deform=False)
    means, _ = class_intensities(tables, PLAIN, np.random.default_rng(5))
    row = {int(v): i for i, v in enumerate(LABELS)}
    scale = image[labels == 2].mean() / means[row[2]]
    for value in (24, 515, 511, 3, 4):
        voxels = image[labels == value]
        assert voxels.std() < 1e-3 * max(voxels.mean(), 1)
        assert voxels.mean() == pytest.approx(means[row[value]] * scale, rel=1e-4)
    np.testing.assert_array_equal(moved, labels)


def test_real_t1_priors_give_a_t1_contrast():
    # On the shipped SynthSeg tables: white matter brighter than cortex, cortex brighter than
    # CSF, on average over heads (the T1 ordering the table was built to keep).
    if not SHARED_LABELS.is_dir():
        pytest.skip(f"label maps not available: {SHARED_LABELS}")
    real = LabelTables.load(SHARED_LABELS)
    rng = np.random.default_rng(0)
    draws = np.stack([class_intensities(real, HeadConfig(), rng)[0] for _ in range(500)])
    mean = dict(zip((int(v) for v in real.labels), draws.mean(axis=0), strict=True))
    assert mean[2] > mean[3] > mean[24] > mean[0]
    assert mean[41] == pytest.approx(mean[2]) and mean[4] < mean[3]


# ----------------------------------------------------------------------------- deformation


def test_deformation_moves_anatomy_but_makes_no_new_labels():
    labels = head_labels()
    moved = deform_labels(labels, HeadConfig(deform_voxels=3.0), np.random.default_rng(3))
    assert set(np.unique(moved)) <= set(np.unique(labels))
    changed = (moved != labels).mean()
    assert 0.02 < changed < 0.6
    # Every tissue survives the move.
    assert set(np.unique(moved)) == set(np.unique(labels))


def test_same_seed_same_head_other_seed_other_head(tables):
    labels = head_labels()
    a, la = synthesize_head(labels, tables, HeadConfig(), seed=(4, 1))
    b, lb = synthesize_head(labels, tables, HeadConfig(), seed=(4, 1))
    c, _ = synthesize_head(labels, tables, HeadConfig(), seed=(4, 2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= 0


def test_pool_is_cached_and_read_back_identically(tables, tmp_path):
    folder = write_label_maps(tmp_path / "maps", 2)
    maps = discover_label_maps(folder)
    cache = tmp_path / "cache"
    first, affines = generate_pool(maps, tables, HeadConfig(), 3, seed=9, cache=cache)
    assert len(list(cache.glob("head-*.npy"))) == 3
    again, _ = generate_pool(maps, tables, HeadConfig(), 3, seed=9, cache=cache)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    # Head 2 comes from map 0 again, with its own seed.
    assert not np.array_equal(first[0], first[2])
    assert np.allclose(affines[0], affines[2])


def test_validation_anatomies_never_enter_the_pool(tmp_path):
    maps = discover_label_maps(write_label_maps(tmp_path, 5))
    train, val = split_label_maps(maps, 2, seed=0)
    assert len(train) == 3 and len(val) == 2
    assert not {m.subject for m in train} & {m.subject for m in val}
    assert split_label_maps(maps, 2, seed=0) == (train, val)
    with pytest.raises(TransMRSRError, match="cannot keep"):
        split_label_maps(maps, 5, seed=0)


def test_validation_heads_come_from_the_kept_out_anatomies_only(tmp_path):
    labels = write_label_maps(write_tables(tmp_path / "labels"), 4)
    config = SyntheticConfig(labels=str(labels), count=3, val_maps=1, val_heads=2)
    _, val = split_label_maps(discover_label_maps(labels), 1, seed=3)
    heads = validation_heads(config, seed=3, cache=tmp_path / "cache")  # stored as float16
    assert [name for name, _, _ in heads] == [f"synthetic {val[0].subject} #{i}" for i in (0, 1)]
    assert len(list((tmp_path / "cache").glob(f"head-*-{val[0].subject}-t1.npy"))) == 2
    # Normalised as the real volumes are, from their own draws: not the training pool's head
    # of the same index.
    tables = LabelTables.load(labels)
    raw, _ = generate_pool(val, tables, config.head, 2, seed=3 + VALIDATION_SEED_OFFSET)
    for (_, image, _), made in zip(heads, raw, strict=True):
        np.testing.assert_allclose(image, IntensityScaler.fit(made)(made), atol=2e-3)
    pool, _ = generate_pool(val, tables, config.head, 1, seed=3)
    assert not np.allclose(raw[0], pool[0], atol=1.0)
    assert not np.array_equal(heads[0][1], heads[1][1])
    again = validation_heads(config, seed=3)
    for (_, x, ax), (_, y, ay) in zip(heads, again, strict=True):
        np.testing.assert_allclose(x, y, atol=2e-3)  # the cache stores float16
        np.testing.assert_array_equal(ax, ay)
    assert validation_heads(replace(config, val_heads=0), seed=3) == []
    with pytest.raises(TransMRSRError, match="kept-out anatomies"):
        SyntheticConfig(labels=str(labels), val_maps=0, val_heads=1)


def test_validation_scores_subjects_and_heads_apart(tmp_path):
    data = write_subjects(tmp_path / "data", 2)
    labels = write_label_maps(write_tables(tmp_path / "labels"), 3)
    synthetic = SyntheticConfig(labels=str(labels), count=2, val_maps=1, val_heads=2)
    config = with_overrides(SR_PRESETS["tiny"], synthetic=synthetic)
    config = replace(config, model=replace(config.model, use_prior=False, use_sdt=False))
    run_data = select_data(
        [data], contrast="T1", split_file=None, val=1, test=0, seed=0, contrasts=None
    )
    heads = validation_heads(synthetic, seed=0)
    validation = ValidationSet.build(run_data, config, heads)
    groups = [item["group"] for item in validation.items]
    per_volume = len(config.val_factors)
    assert groups == ["subjects"] * per_volume + ["heads"] * 2 * per_volume
    model = build_model(config.arch, config.model)
    scores = validation.evaluate(model.eval(), DistContext(), batch_size=4)
    assert set(scores) == {"psnr", "ssim", "gain_db", "gain_db_heads", "gain_db_subjects"}
    # Each item weighs the same: the overall gain is the item-weighted mean of the groups.
    expected = (scores["gain_db_subjects"] + 2 * scores["gain_db_heads"]) / 3
    assert scores["gain_db"] == pytest.approx(expected, abs=1e-9)
    assert scores["gain_db_heads"] != pytest.approx(scores["gain_db_subjects"], abs=1e-3)


# ----------------------------------------------------------------------------- bad input


def test_bad_label_maps_are_refused(tmp_path, tables):
    affine = np.eye(4)
    image = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)) * 100, affine), image)
    with pytest.raises(TransMRSRError, match="integers"):
        load_label_map(image)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), affine), flat)
    with pytest.raises(TransMRSRError, match="3-D"):
        load_label_map(flat)
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), affine), nan)
    with pytest.raises(TransMRSRError, match="NaN"):
        load_label_map(nan)
    with pytest.raises(TransMRSRError, match="no such"):
        load_label_map(tmp_path / "missing.nii.gz")
    unknown = head_labels()
    unknown[0, 0, 0] = 999
    with pytest.raises(TransMRSRError, match="999"):
        synthesize_head(unknown, tables, HeadConfig(), seed=0)


def test_missing_or_mismatched_tables_are_refused(tmp_path):
    folder = write_tables(tmp_path / "t")
    (folder / "prior_stds_t1.npy").unlink()
    with pytest.raises(TransMRSRError, match=r"missing label tables prior_stds_t1\.npy"):
        LabelTables.load(folder)
    # Priors with fewer columns than the T1 table needs.
    folder = write_tables(tmp_path / "few", n_columns=5)
    with pytest.raises(TransMRSRError, match="prior columns"):
        LabelTables.load(folder)
    # A label without a T1 class, and no table of the folder's own to give one.
    folder = write_tables(tmp_path / "unknown")
    np.save(folder / "generation_labels.npy", np.array([0, 24, 515, 511, 2, 3, 4, 41, 42, 777]))
    with pytest.raises(TransMRSRError, match="777"):
        LabelTables.load(folder)
    np.save(folder / "generation_classes_t1.npy", np.arange(10) % 5)
    assert LabelTables.load(folder).t1_classes.tolist() == (np.arange(10) % 5).tolist()


def test_the_t1_table_covers_every_synthseg_label():
    if not SHARED_LABELS.is_dir():
        pytest.skip(f"label maps not available: {SHARED_LABELS}")
    labels = np.load(SHARED_LABELS / "generation_labels.npy")
    assert {int(v) for v in labels} <= set(T1_PRIOR_COLUMN)


# ----------------------------------------------------------------------------- training


def test_mixed_dataset_takes_the_ratio_and_is_a_function_of_the_index():
    class Tagged(torch.utils.data.Dataset):
        def __init__(self, tag, n):
            self.tag, self.n = tag, n

        def set_epoch(self, epoch):
            pass

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return (self.tag, i)

    mixed = MixedDataset(Tagged("real", 2000), Tagged("syn", 7), 0.3, seed=1)
    sources = [mixed[i][0] for i in range(len(mixed))]
    assert sources.count("syn") / len(sources) == pytest.approx(0.3, abs=0.03)
    assert [mixed[i] for i in range(50)] == [mixed[i] for i in range(50)]
    mixed.set_epoch(1)
    assert [mixed[i][0] for i in range(len(mixed))] != sources


def _mixed_run(data, labels, out, *, stop_after=None, resume=False):
    config = with_overrides(
        SR_PRESETS["tiny"],
        samples_per_epoch=12,
        max_epochs=3,
        checkpoint_every=1,
        synthetic=SyntheticConfig(labels=str(labels), ratio=0.5, count=3, val_maps=1),
    )
    config = replace(config, model=replace(config.model, use_prior=False, use_sdt=False))
    run_data = select_data(
        [data], contrast="T1", split_file=None, val=1, test=0, seed=0, contrasts=None
    )
    return train_sr(
        run_data,
        config,
        out,
        DistContext(),
        prior_path=None,
        resume_from=prepare_out(out, resume=resume),
        stop_after=stop_after,
        progress=False,
    )


def test_training_on_the_mix_resumes_bit_identically(tmp_path):
    data = write_subjects(tmp_path / "data", 3)
    labels = write_tables(tmp_path / "labels")
    write_label_maps(labels, 3)
    whole = _mixed_run(data, labels, tmp_path / "whole")
    assert whole.steps == 9
    _mixed_run(data, labels, tmp_path / "parts", stop_after=4)
    parts = _mixed_run(data, labels, tmp_path / "parts", resume=True)
    assert parts.steps == 9
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "parts" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"]["epochs"] == b["history"]["epochs"]
    # The run records its mix, and which anatomy never trained.
    saved = resolve_config(str(tmp_path / "whole" / "config.json"), "sr")
    assert saved.synthetic.ratio == 0.5 and saved.synthetic.head.contrast == "t1"
    split = (tmp_path / "whole" / "synthetic.json").read_text()
    assert "seg_0" in split and len(list((tmp_path / "whole" / "synthetic").glob("*.npy"))) == 3


def test_synthetic_heads_make_pairs_like_real_volumes(tables, tmp_path):
    maps = discover_label_maps(write_label_maps(tmp_path, 1))
    images, affines = generate_pool(maps, tables, HeadConfig(), 1, seed=0)
    pairs = PairDataset(
        [images[0] / images[0].max()], affines, PairConfig(factor_range=(4, 4), patch_size=32)
    )
    lr, hr, factor = pairs[0]
    assert lr.shape == hr.shape == (1, 32, 32) and factor == 4
    assert torch.isfinite(lr).all() and not torch.equal(lr, hr)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--synthetic", "{missing}"], "no such label folder"),
        (["--synthetic", "{empty}"], "missing label tables"),
        (["--synthetic", "{labels}", "--synthetic-ratio", "1.5"], "must be in (0, 1]"),
        (["--synthetic", "{labels}", "--synthetic-contrast", "t3"], "invalid choice"),
        (
            ["--synthetic", "{labels}", "--synthetic-val-maps", "0", "--synthetic-val-heads", "1"],
            "need kept-out anatomies",
        ),
    ],
)
def test_synthetic_options_fail_in_one_line(tmp_path, capsys, extra, message):
    data = write_subjects(tmp_path / "data", 3)
    labels = write_label_maps(write_tables(tmp_path / "labels"), 2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "seg.nii.gz").write_bytes(b"")
    names = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "labels": labels}
    extra = [e.format(**names) for e in extra]
    args = ["train", str(data), "--arch", "edsr", "--config", "tiny", "--out", str(tmp_path / "r")]
    assert main([*args, "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not any("Traceback" in line for line in err)
