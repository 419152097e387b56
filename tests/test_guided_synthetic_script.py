"""benchmarks/guided_synthetic.py: the held-out guided heads and their table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark_module

SHARED_LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "labels"


@pytest.fixture(scope="module")
def gs():
    with benchmark_module("guided_synthetic") as module:
        yield module


def test_a_held_out_head_is_two_contrasts_of_one_kept_out_anatomy(gs):
    if not SHARED_LABELS.is_dir():
        pytest.skip(f"label maps not available: {SHARED_LABELS}")
    image, guide, brain, affine, subject = gs.make_head(SHARED_LABELS, 0, "random", "t1")
    # The anatomies the shipped files' runs kept out (split_label_maps, 2, seed 0).
    assert subject in {"synthseg_training_seg_18", "synthseg_training_seg_19"}
    assert image.shape == guide.shape == brain.shape
    assert affine.shape == (4, 4)
    assert 0.05 < brain.mean() < 0.6  # the brain, not the head or nothing
    inside = brain & (image > 0) & (guide > 0)
    # Another contrast of the same anatomy: related, but not the same image.
    r = np.corrcoef(image[inside], guide[inside])[0, 1]
    assert abs(r) < 0.99
    again = gs.make_head(SHARED_LABELS, 0, "random", "t1")
    np.testing.assert_array_equal(again[0], image)  # a pure function of the head index


def test_the_table_gives_each_case_and_the_mean_difference(gs):
    def record(head, factor, unguided, guided):
        return {
            "head": head,
            "subject": f"s{head}",
            "factor": factor,
            "unguided": {"gain_psnr": unguided, "gain_ssim": 0.01, "seconds": 80.0},
            "guided": {"gain_psnr": guided, "gain_ssim": 0.02, "seconds": 300.0},
        }

    text = gs.table([record(0, 4.0, 1.0, 3.0), record(1, 4.0, 2.0, 3.0), record(0, 8.0, 1, 1.5)])
    assert "| 0 (s0) | x4 | +1.000 | +3.000 | **+2.000** |" in text
    assert "| mean | x4 | | | **+1.500** | | |" in text
    assert "| mean | x8 | | | **+0.500** | | |" in text
    refused = {**record(2, 4.0, 1.0, 1.0), "refused": "the guide does not line up with the scan"}
    text = gs.table([record(0, 4.0, 1.0, 3.0), refused])
    assert "| 2 (s2) | x4 | +1.000 | refused: the guide does not line up with the scan |" in text
    assert "| mean | x4 | | | **+2.000** | | |" in text  # a refused guide is not averaged
    # What the refused guide would have given with the check off is shown beside it.
    refused["forced"] = {"gain_psnr": 2.5, "gain_ssim": 0.03, "seconds": 300.0}
    assert (
        "refused: the guide does not line up with the scan; with the check off +2.500 (+1.500 "
        "over unguided) |" in gs.table([refused])
    )
