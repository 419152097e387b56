"""The pretrained T1 model shipped in the package: present, small, documented, and useful."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transmrsr.degradation import degrade
from transmrsr.evaluation.compare import compare_volumes
from transmrsr.inference.restore import SHIPPED_MODELS, load_model, restore_volume
from transmrsr.interpolation import upsample
from transmrsr.templates import mni152_brain_mask, mni152_t1

WEIGHTS = Path(__file__).resolve().parents[1] / "transmrsr" / "weights"


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_models_are_small_documented_and_load(name):
    path = WEIGHTS / SHIPPED_MODELS[name]
    assert path.stat().st_size <= 30 * 2**20
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    assert SHIPPED_MODELS[name] in card and "held-out" in card.lower()
    model = load_model(name)
    assert model.info["factor_range"][0] <= 2 and model.info["factor_range"][1] >= 8
    assert sum(p.numel() for p in model.network.parameters()) > 1_000_000


@pytest.mark.slow
def test_shipped_t1_model_beats_cubic_on_an_unseen_template_slab():
    """x4 along SI on a central slab of the MNI152 template (never used in training)."""
    ref, mask = mni152_t1(), mni152_brain_mask()
    index = (slice(40, 160), slice(50, 180), slice(60, 124))  # LR x AP x SI slab
    affine = ref.affine.copy()
    affine[:3, 3] = ref.affine[:3, :3] @ np.array([40.0, 50.0, 60.0]) + ref.affine[:3, 3]
    ref = ref.with_data(np.ascontiguousarray(ref.data[index]), affine)
    mask = mask.with_data(np.ascontiguousarray(mask.data[index]), affine)
    lr_data, lr_affine = degrade(ref.data, ref.affine, 2, 4.0)
    lr = ref.with_data(lr_data, lr_affine)
    cubic_data, cubic_affine = upsample(lr_data, lr_affine, 2, 4.0, "cubic")
    cubic = compare_volumes(lr.with_data(cubic_data, cubic_affine), ref, mask=mask, thick_axis=2)
    restored = restore_volume(lr, load_model("t1"), planes="one", batch_size=16)
    ours = compare_volumes(restored.volume, ref, mask=mask, thick_axis=2)
    # A guard that the shipped weights help, not the quality claim (that is MODEL_CARD.md's,
    # measured on whole held-out volumes): the interim model gains +0.21 dB on this slab.
    assert ours.psnr_masked > cubic.psnr_masked + 0.1, (ours.psnr_masked, cubic.psnr_masked)
    assert ours.psnr_paper > cubic.psnr_paper + 0.1
    assert ours.ssim_masked > cubic.ssim_masked
