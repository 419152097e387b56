"""The MNI152 2009 template that nilearn ships: a real T1 that every installation has offline.

Used by the demo, by tests that need a real brain and by the benchmark as a held-out volume.
"""

from __future__ import annotations

import logging

import numpy as np

from transmrsr.io import Volume

log = logging.getLogger(__name__)


def _as_volume(image) -> Volume:
    return Volume(
        data=np.asarray(image.get_fdata(dtype=np.float32)),
        affine=np.asarray(image.affine, np.float64),
        header=image.header,
    )


def mni152_t1(resolution: int = 1) -> Volume:
    """The MNI152 (2009) T1 template at 1 or 2 mm, intensities 0-1, RAS orientation."""
    from nilearn.datasets import load_mni152_template

    return _as_volume(load_mni152_template(resolution=resolution))


def mni152_brain_mask(resolution: int = 1) -> Volume:
    """The template's brain mask (values 0/1) on the same grid as :func:`mni152_t1`."""
    from nilearn.datasets import load_mni152_brain_mask

    return _as_volume(load_mni152_brain_mask(resolution=resolution))
